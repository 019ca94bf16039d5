//! Power cuts under the real server, its storage on the lazy filesystem:
//! nothing acknowledged is ever lost, in a round or while the operator
//! opens and closes the next (see `testkit::power`).

use testkit::power::{run_power_round, Moment, PowerPlan};

#[test]
fn power_cuts_at_every_moment_of_a_round_lose_nothing_acknowledged() {
    let work = tempfile::tempdir().unwrap();
    let pause = std::time::Duration::from_millis(1);
    let plan =
        PowerPlan { rows: datagen::COURSE_ROWS.to_vec(), cuts: 24, pause, seed: 7574, next_round: true };
    let outcome = run_power_round(&plan, work.path()).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{outcome}");
    assert!(outcome.total() >= 20, "{outcome}");
    let moments = [Moment::RoundOpened, Moment::Upload, Moment::Finished, Moment::Drawn, Moment::AfterDraw];
    for moment in moments.into_iter().chain([Moment::Moving, Moment::Opened, Moment::Closed]) {
        assert!(outcome.cuts.get(&moment).is_some_and(|&n| n > 0), "no cut {moment:?}: {outcome}");
    }
    assert!(outcome.report.exact(), "{outcome}");
}
