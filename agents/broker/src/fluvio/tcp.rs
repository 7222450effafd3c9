//! TCP options on every socket the Fluvio client opens: Nagle's algorithm
//! off, and every read acknowledged at once.
//!
//! The SPUs leave Nagle's algorithm on, so an SPU holds back a small write
//! (a produce response, a stream frame) while an earlier one is not yet
//! acknowledged, and a client that delays its ACKs (Linux: up to 40 ms)
//! makes it wait that long. The client multiplexes every produce, stream and
//! acknowledgement to an SPU over one socket, so on two SPUs produce
//! requests took 1-2 ms at the median but 43 ms at the 90th percentile, and
//! the pipeline ran at 45-65 questions/s instead of about 500 whenever its
//! busy topics shared a socket that way (docs/benchmarks.md). Acknowledging
//! at once (TCP_QUICKACK, set again after each read because Linux leaves
//! quick-ACK mode by itself) removed the wait. The wrapper keeps whatever
//! connector the profile asks for (plain or TLS) and sets the options on the
//! socket under it.

use fluvio_future::net::{
    BoxReadConnection, BoxWriteConnection, ConnectionFd, DomainConnector, TcpDomainConnector,
};

pub struct LowLatency(pub DomainConnector);

#[async_trait::async_trait]
impl TcpDomainConnector for LowLatency {
    async fn connect(
        &self,
        domain: &str,
    ) -> Result<(BoxWriteConnection, BoxReadConnection, ConnectionFd), std::io::Error> {
        let (write, read, fd) = self.0.connect(domain).await?;
        set_nodelay(fd)?;
        let read = Box::new(QuickAck { inner: read, fd });
        Ok((write, read, fd))
    }

    fn new_domain(&self, domain: String) -> DomainConnector {
        Box::new(LowLatency(self.0.new_domain(domain)))
    }

    fn domain(&self) -> &str {
        self.0.domain()
    }

    fn clone_box(&self) -> DomainConnector {
        Box::new(LowLatency(self.0.clone_box()))
    }
}

/// A reader that acknowledges every read at once. Linux leaves quick-ACK
/// mode by itself, so the option is set again after each read that brought
/// data.
struct QuickAck {
    inner: BoxReadConnection,
    fd: ConnectionFd,
}

impl futures::AsyncRead for QuickAck {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = polled {
            if n > 0 {
                set_quickack(self.fd);
            }
        }
        polled
    }
}

#[cfg(target_os = "linux")]
fn set_quickack(fd: ConnectionFd) {
    // SAFETY: as in `set_nodelay`; the reader owns the connection.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let _ = socket2::SockRef::from(&fd).set_quickack(true);
}

#[cfg(not(target_os = "linux"))]
fn set_quickack(_fd: ConnectionFd) {}

#[cfg(unix)]
fn set_nodelay(fd: ConnectionFd) -> std::io::Result<()> {
    // SAFETY: the connector has just returned `fd` with the connection that
    // owns it, which stays open for the duration of this call.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    socket2::SockRef::from(&fd).set_nodelay(true)
}

#[cfg(not(unix))]
fn set_nodelay(_fd: ConnectionFd) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wrapper connects through the connector it wraps and leaves the
    /// socket with Nagle's algorithm off.
    #[tokio::test]
    async fn sockets_come_out_with_nodelay() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let connector = LowLatency(Box::new(fluvio_future::net::DefaultDomainConnector::new()));
        let (_write, _read, fd) = connector.connect(&addr).await.unwrap();
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        assert!(socket2::SockRef::from(&fd).nodelay().unwrap());
        // And a plain connection does not: the test would pass without the
        // wrapper otherwise.
        let plain = fluvio_future::net::DefaultDomainConnector::new();
        let (_w, _r, fd) = plain.connect(&addr).await.unwrap();
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        assert!(!socket2::SockRef::from(&fd).nodelay().unwrap());
    }
}
