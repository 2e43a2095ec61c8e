//! The agent channel on a byte stream: [`onionlb_core::agent`]'s messages
//! written to and read from a socket, for both ends (the agent, and the
//! manager's listeners).

use onionlb_core::agent::{AgentError, Decoder, Message};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

/// A stream and what has been read of it, yielding messages of type `In`.
pub struct Channel<S, In> {
    stream: S,
    decoder: Decoder<In>,
}

/// Why no message could be read.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The peer closed the stream.
    #[error("the other end closed the connection")]
    Closed,
    /// Reading failed.
    #[error("reading: {0}")]
    Io(#[source] std::io::Error),
    /// The peer does not speak the protocol.
    #[error(transparent)]
    Protocol(AgentError),
}

impl<S: AsyncRead + AsyncWrite + Unpin, In: Message> Channel<S, In> {
    /// A channel on `stream`, nothing read yet.
    pub fn new(stream: S) -> Self {
        Channel {
            stream,
            decoder: Decoder::default(),
        }
    }

    /// Writes one encoded message.
    pub async fn send(&mut self, message: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(message).await
    }

    /// The next whole message. Cancel-safe: bytes read before a
    /// cancellation stay in the decoder.
    pub async fn next(&mut self) -> Result<In, ChannelError> {
        let mut buffer = [0u8; 16 * 1024];
        loop {
            if let Some(message) = self
                .decoder
                .next_message()
                .map_err(ChannelError::Protocol)?
            {
                return Ok(message);
            }
            let n = self
                .stream
                .read(&mut buffer)
                .await
                .map_err(ChannelError::Io)?;
            if n == 0 {
                return Err(ChannelError::Closed);
            }
            self.decoder.push(&buffer[..n]);
        }
    }
}
