//! A build's log as the worker writes it.

use std::sync::Arc;

use buildgrid_store::Store;

/// Appends a build's log lines, numbered from 1. Lines go to a writer thread that stores them
/// as they come (several at once when they come fast), so the async threads never wait for
/// the database.
pub(crate) struct Log {
    seq: i64,
    sender: Option<std::sync::mpsc::Sender<buildgrid_store::LogLine>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Log {
    pub(crate) fn start(store: Arc<Store>, build: i64, seq: i64) -> Log {
        let (sender, receiver) = std::sync::mpsc::channel::<buildgrid_store::LogLine>();
        let writer = std::thread::Builder::new()
            .name(format!("build-{build}-log"))
            .spawn(move || {
                while let Ok(first) = receiver.recv() {
                    let mut batch = vec![first];
                    while batch.len() < 1000
                        && let Ok(next) = receiver.try_recv()
                    {
                        batch.push(next);
                    }
                    if let Err(error) = store.db.append_logs(build, &batch) {
                        tracing::error!(build, %error, "cannot store build log lines");
                    }
                }
            })
            .expect("a thread can be started");
        Log {
            seq,
            sender: Some(sender),
            writer: Some(writer),
        }
    }

    pub(crate) fn line(&mut self, step: Option<&str>, line: &str) {
        self.seq += 1;
        if let Some(sender) = &self.sender {
            let at_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0);
            let _ = sender.send(buildgrid_store::LogLine {
                seq: self.seq,
                at_ms,
                step: step.map(str::to_owned),
                line: line.to_owned(),
            });
        }
    }

    /// Waits until every line is stored.
    pub(crate) async fn close(&mut self) {
        self.sender = None;
        if let Some(writer) = self.writer.take() {
            let _ = tokio::task::spawn_blocking(move || writer.join()).await;
        }
    }
}
