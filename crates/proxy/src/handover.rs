//! Handing the listening sockets to a new proxy: the new one asks the running one on its
//! control socket, receives the sockets themselves (SCM_RIGHTS), and starts accepting on them
//! while the old one stops accepting and finishes its open requests. The sockets are never
//! closed, so no connection waiting in their queues is lost.

use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use serde::{Deserialize, Serialize};

/// Most ports one proxy hands over.
const MAX_PORTS: usize = 256;

#[derive(Serialize, Deserialize)]
struct Sockets {
    ports: Vec<u16>,
}

/// The request line a new proxy sends.
pub(crate) const REQUEST: &[u8] = b"{\"command\":\"handover\"}\n";

/// Sends `sockets` (port and listening socket) over `stream`, in one message.
pub(crate) fn give(
    stream: &UnixStream,
    sockets: &[(u16, std::net::TcpListener)],
) -> std::io::Result<()> {
    let ports = Sockets {
        ports: sockets.iter().map(|(port, _)| *port).collect(),
    };
    let mut text = serde_json::to_vec(&ports)?;
    text.push(b'\n');
    let fds: Vec<_> = sockets.iter().map(|(_, socket)| socket.as_fd()).collect();
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len().max(1)))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(std::io::Error::other("too many sockets for one message"));
    }
    rustix::net::sendmsg(
        stream,
        &[IoSlice::new(&text)],
        &mut control,
        SendFlags::empty(),
    )?;
    Ok(())
}

/// Asks the proxy listening on `control` for its sockets. None when no proxy answers there.
pub(crate) fn take(control: &Path) -> std::io::Result<Option<Vec<(u16, std::net::TcpListener)>>> {
    let mut stream = match UnixStream::connect(control) {
        Ok(stream) => stream,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    stream.write_all(REQUEST)?;
    let mut data = vec![0u8; 64 * 1024];
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_PORTS))];
    let mut control_buffer = RecvAncillaryBuffer::new(&mut space);
    let received = rustix::net::recvmsg(
        &stream,
        &mut [IoSliceMut::new(&mut data)],
        &mut control_buffer,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds: Vec<OwnedFd> = Vec::new();
    for message in control_buffer.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    let mut text = data[..received.bytes].to_vec();
    // The rest of the line, should it come in more than one read.
    while !text.ends_with(b"\n") {
        let mut more = [0u8; 4096];
        let n = stream.read(&mut more)?;
        if n == 0 {
            break;
        }
        text.extend_from_slice(&more[..n]);
    }
    if let Ok(reply) = serde_json::from_slice::<crate::control::Reply>(&text)
        && let crate::control::Reply::Error { message } = reply
    {
        return Err(std::io::Error::other(format!(
            "the running proxy refused: {message}"
        )));
    }
    let sockets: Sockets = serde_json::from_slice(&text).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("the running proxy's answer: {e}"),
        )
    })?;
    if sockets.ports.len() != fds.len() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "the running proxy named {} ports and sent {} sockets",
                sockets.ports.len(),
                fds.len()
            ),
        ));
    }
    let listeners = sockets
        .ports
        .into_iter()
        .zip(fds)
        .map(|(port, fd)| (port, std::net::TcpListener::from(fd)))
        .collect();
    Ok(Some(listeners))
}
