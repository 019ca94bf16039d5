//! Asking the server, as an agency, for its winners: one blocking TLS
//! connection, `Hello` and `WinnersQuery`, for checks after a round.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use bytes::BytesMut;
use protocol::{Frame, Message, RoundStage, MAX_FRAME_LEN};

/// Asks the server, as `agency` (with its certificate in `credentials`),
/// for its winners of round 1, which it finished.
pub fn winners_of(address: SocketAddr, agency: u32, credentials: &Path) -> Result<Vec<String>, String> {
    winners_in(address, agency, 1, credentials, true)
}

/// Asks the server, as `agency`, for its winners of drawn round `round`;
/// with `finished`, the agency must have finished it.
pub fn winners_in(
    address: SocketAddr,
    agency: u32,
    round: u64,
    credentials: &Path,
    finished: bool,
) -> Result<Vec<String>, String> {
    let config = edge::credentials::client_config(&crate::credentials::agency(credentials, agency))
        .map_err(|e| e.to_string())?;
    let name = protocol::tls::server_name(&address.to_string()).map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect(address).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    let connection = rustls::ClientConnection::new(config, name).map_err(|e| e.to_string())?;
    let mut stream = rustls::StreamOwned::new(connection, tcp);
    let mut buf = BytesMut::new();
    send(&mut stream, &Message::Hello { agency, round, wait_ms: 0 })?;
    match receive(&mut stream, &mut buf)? {
        Message::Welcome { finished: did, stage: RoundStage::Drawn, .. } if did || !finished => {}
        other => return Err(format!("Hello answered with {other:?}")),
    }
    send(&mut stream, &Message::WinnersQuery { wait_ms: 0 })?;
    let mut documents = Vec::new();
    loop {
        match receive(&mut stream, &mut buf)? {
            Message::Winners { last, documents: more } => {
                documents.extend(more);
                if last {
                    return Ok(documents);
                }
            }
            other => return Err(format!("WinnersQuery answered with {other:?}")),
        }
    }
}

fn send(stream: &mut impl std::io::Write, message: &Message) -> Result<(), String> {
    let mut frame = BytesMut::new();
    message.encode(&mut frame);
    stream.write_all(&frame).and_then(|()| stream.flush()).map_err(|e| e.to_string())
}

fn receive(stream: &mut impl std::io::Read, buf: &mut BytesMut) -> Result<Message, String> {
    loop {
        if let Some(frame) = Frame::parse(buf, MAX_FRAME_LEN).map_err(|e| e.to_string())? {
            return Message::from_frame(frame).map_err(|e| e.to_string());
        }
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the server closed the connection".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
