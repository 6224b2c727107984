//! The pipeline's own thread: a single-threaded async runtime that runs the scheduler,
//! the sinks and the event sources. A tick — the timer, the bulk call's reply, the
//! collectors, every sink's ingest — then happens on this one thread and wakes no other:
//! the HTTP runtime's workers sleep through it. (On the shared two-worker runtime a tick
//! woke the second worker for the sinks the first one had just woken, and both then
//! took turns on the allocator's locks: docs/performance.md, ninth pass.) Blocking work
//! started here (libvirt calls, SQLite) runs on this runtime's own blocking threads.

use std::io;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// When the agent stops: how long blocking work still running here (a hung libvirt
/// call) is waited for before the thread ends anyway.
const SHUTDOWN_WAIT: Duration = Duration::from_millis(500);

/// The running pipeline thread. Dropping it stops the runtime (tasks still running are
/// dropped) and waits for the thread, at most [`SHUTDOWN_WAIT`] for blocking work.
pub struct PipelineThread {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl PipelineThread {
    /// Starts the thread and its runtime. `blocking_keep_alive`: how long an idle
    /// blocking thread waits for the next call before it ends.
    pub fn start(blocking_keep_alive: Duration) -> io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("vadvisor-blocking")
            .thread_keep_alive(blocking_keep_alive)
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("vadvisor-pipeline".into())
            .spawn(move || {
                // Runs every spawned task until told to stop (or the sender is gone).
                let _ = runtime.block_on(stopped);
                runtime.shutdown_timeout(SHUTDOWN_WAIT);
            })?;
        Ok(Self {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Where pipeline tasks are spawned.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

impl Drop for PipelineThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The thread id a task spawned on `handle` runs on, and whether it could use the
    /// runtime's timer and blocking pool there.
    fn task_thread(handle: &Handle) -> std::thread::ThreadId {
        let (tx, rx) = std::sync::mpsc::channel();
        handle.spawn(async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let blocking = tokio::task::spawn_blocking(|| std::thread::current().id())
                .await
                .expect("blocking task");
            let _ = tx.send((std::thread::current().id(), blocking));
        });
        let (task, blocking) = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the task ran");
        assert_ne!(task, blocking, "blocking work runs off the pipeline thread");
        task
    }

    #[test]
    fn every_task_runs_on_the_one_pipeline_thread_with_timers_and_blocking_work() {
        let pipeline = PipelineThread::start(Duration::from_secs(1)).expect("start");
        let first = task_thread(pipeline.handle());
        let second = task_thread(pipeline.handle());
        assert_eq!(first, second, "both tasks ran on the same thread");
        assert_ne!(first, std::thread::current().id());
    }

    #[test]
    fn dropping_it_stops_its_tasks_and_ends_the_thread() {
        let pipeline = PipelineThread::start(Duration::from_secs(1)).expect("start");
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        // Holds the sender until the task is dropped with the runtime.
        pipeline.handle().spawn(async move {
            let _tx = tx;
            std::future::pending::<()>().await;
        });
        drop(pipeline);
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected),
            "the task was dropped, so its sender is gone"
        );
    }
}
