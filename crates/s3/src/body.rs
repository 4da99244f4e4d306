//! A blob's bytes on their way from the object store: a task on the backend's runtime reads
//! the response and sends its chunks through a bounded channel; the receiving end is read
//! blocking (`Read`) or polled as a stream, from any thread or runtime.

use std::io::{self, Read};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use bytes::{Buf, Bytes};
use futures_core::Stream;
use futures_util::StreamExt;
use tokio::sync::mpsc;

/// Chunks in flight between the response and its reader.
const CHUNKS: usize = 8;

pub(crate) struct Body {
    chunks: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl Body {
    pub(crate) fn spawn(
        runtime: &tokio::runtime::Handle,
        mut stream: impl Stream<Item = io::Result<Bytes>> + Send + Unpin + 'static,
    ) -> Body {
        let (sender, chunks) = mpsc::channel(CHUNKS);
        runtime.spawn(async move {
            while let Some(chunk) = stream.next().await {
                let failed = chunk.is_err();
                // The reader went away: stop reading the response.
                if sender.send(chunk).await.is_err() || failed {
                    break;
                }
            }
        });
        Body {
            chunks,
            current: Bytes::new(),
        }
    }

    pub(crate) fn empty() -> Body {
        let (_, chunks) = mpsc::channel(1);
        Body {
            chunks,
            current: Bytes::new(),
        }
    }
}

impl Stream for Body {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if !self.current.is_empty() {
            let chunk = std::mem::take(&mut self.current);
            return Poll::Ready(Some(Ok(chunk)));
        }
        self.chunks.poll_recv(cx)
    }
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match block_on_next(&mut self.chunks) {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}

/// Waits for the next chunk on this thread, parking it in between: unlike the runtime's own
/// blocking receive this never refuses to run on a thread that belongs to a runtime.
fn block_on_next(chunks: &mut mpsc::Receiver<io::Result<Bytes>>) -> Option<io::Result<Bytes>> {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        match chunks.poll_recv(&mut cx) {
            Poll::Ready(chunk) => return chunk,
            Poll::Pending => std::thread::park(),
        }
    }
}
