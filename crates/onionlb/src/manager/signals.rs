//! The signals the manager acts on.

use anyhow::Context as _;

/// What a signal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Signal {
    /// SIGINT or SIGTERM.
    Stop,
    /// SIGHUP: read the configuration again.
    Reload,
}

/// The signals the manager acts on: SIGINT and SIGTERM stop it wherever
/// it is waiting; SIGHUP reloads the configuration.
pub struct StopSignals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// Takes over SIGINT, SIGTERM and SIGHUP from their default actions.
    pub fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(StopSignals {
            terminate: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            interrupt: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            hangup: signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
        })
    }

    /// Resolves when SIGINT or SIGTERM arrives.
    pub(super) async fn recv(&mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }

    /// The next signal of the three. A SIGHUP that arrives while only
    /// [`StopSignals::recv`] waits is kept until this is called.
    pub(super) async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.terminate.recv() => Signal::Stop,
            _ = self.interrupt.recv() => Signal::Stop,
            _ = self.hangup.recv() => Signal::Reload,
        }
    }

    /// `work`'s result, or `None` if a stop signal came first.
    pub async fn unless_stopped<T>(
        &mut self,
        work: impl std::future::Future<Output = T>,
    ) -> Option<T> {
        tokio::select! {
            result = work => Some(result),
            () = self.recv() => None,
        }
    }
}
