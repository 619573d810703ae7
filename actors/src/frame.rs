//! The kernel's one framing for every channel to pack code — the block host's pipe or socket, and
//! the egress socket: a 4-byte big-endian length, then that many bytes of UTF-8 JSON.
//!
//! A frame is encoded straight into one buffer (header first, then the JSON written after it), so
//! sending it is one write and the body is never copied. Reading checks the declared length against
//! the caller's limit before allocating or reading the body.

use serde::Serialize;
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Encodes `value` as one frame (header and body in one buffer).
pub fn encode<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<Vec<u8>> {
    let mut frame = Vec::with_capacity(256);
    frame.extend_from_slice(&[0; 4]);
    serde_json::to_writer(&mut frame, value)?;
    let len = (frame.len() - 4) as u32;
    frame[..4].copy_from_slice(&len.to_be_bytes());
    Ok(frame)
}

/// Writes an encoded frame and flushes.
pub async fn write<W: AsyncWrite + Unpin>(writer: &mut W, frame: &[u8]) -> io::Result<()> {
    writer.write_all(frame).await?;
    writer.flush().await
}

/// Why a frame could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadError {
    /// The peer closed cleanly before a frame began.
    Closed,
    /// The peer went away (or the read failed) inside a frame.
    Truncated,
    /// A zero-length frame.
    Empty,
    /// The declared length is over the limit; the body was not read.
    TooLarge(usize),
}

/// Reads one frame's body of at most `max` bytes.
pub async fn read<R: AsyncRead + Unpin>(reader: &mut R, max: usize) -> Result<Vec<u8>, ReadError> {
    let mut header = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match reader.read(&mut header[got..]).await {
            Ok(0) if got == 0 => return Err(ReadError::Closed),
            Ok(0) | Err(_) => return Err(ReadError::Truncated),
            Ok(n) => got += n,
        }
    }
    let len = u32::from_be_bytes(header) as usize;
    if len == 0 {
        return Err(ReadError::Empty);
    }
    if len > max {
        return Err(ReadError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    reader
        .read_exact(&mut body)
        .await
        .map_err(|_| ReadError::Truncated)?;
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_refuse_what_is_wrong() {
        let frame = encode(&serde_json::json!({"a": "é"})).unwrap();
        assert_eq!(&frame[..4], &((frame.len() - 4) as u32).to_be_bytes());
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        write(&mut a, &frame).await.unwrap();
        assert_eq!(read(&mut b, 1024).await.unwrap(), &frame[4..]);
        write(&mut a, &frame).await.unwrap();
        assert_eq!(
            read(&mut b, 3).await,
            Err(ReadError::TooLarge(frame.len() - 4))
        );
        let (mut a, mut b) = tokio::io::duplex(64);
        write(&mut a, &[0, 0, 0, 0]).await.unwrap();
        assert_eq!(read(&mut b, 10).await, Err(ReadError::Empty));
        write(&mut a, &[0, 0, 0, 9, b'{']).await.unwrap();
        drop(a);
        assert_eq!(read(&mut b, 10).await, Err(ReadError::Truncated));
        assert_eq!(read(&mut b, 10).await, Err(ReadError::Closed));
    }
}
