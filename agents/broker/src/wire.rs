//! The protocol between `answerloop broker serve` and its clients: one TCP
//! connection carries request and response frames in turn.
//!
//! A frame is `[length: u32 BE][header length: u32 BE][header JSON]
//! [record count: u32 BE]` then each record as `[key length: u32 BE,
//! u32::MAX for none][key][value length: u32 BE][value]`. Headers are JSON
//! so they stay readable in a capture; records are raw bytes so a value is
//! never re-encoded. Every length is checked against the frame before it is
//! used, a frame over [`MAX_FRAME`] is refused before it is read, and a
//! frame's buffer grows only as its bytes arrive.

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{ChainSpec, DeployReport, Record};

/// The protocol version both ends must speak.
pub const PROTOCOL: u32 = 1;
/// The largest frame either end reads (a batch of large records).
pub const MAX_FRAME: usize = 256 << 20;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Hello {
        protocol: u32,
    },
    CreateTopics {
        topics: Vec<String>,
    },
    Partitions {
        topic: String,
    },
    Deploy {
        topics: Vec<String>,
    },
    /// The frame's records are appended to `topic`.
    Produce {
        topic: String,
        chain: Option<ChainSpec>,
    },
    /// Makes the connection a consumer's: `Next` and `Commit` follow.
    Consume {
        topic: String,
        id: Option<String>,
        chain: Option<ChainSpec>,
        partition: u32,
    },
    Next {
        max: usize,
        wait_ms: u64,
    },
    Commit {
        next: u64,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Response {
    Hello {
        protocol: u32,
    },
    Ok,
    Partitions {
        partitions: u32,
    },
    Deployed {
        report: DeployReport,
    },
    /// The frame's records are the batch.
    Batch {
        next: u64,
        positions: Vec<u64>,
        end: Option<u64>,
    },
    Error {
        message: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {0} bytes is over the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    #[error("malformed frame: {0}")]
    Malformed(String),
}

/// Write one frame and flush it.
pub async fn write_frame<W: AsyncWrite + Unpin, H: Serialize>(
    out: &mut W,
    header: &H,
    records: &[Record],
) -> Result<(), WireError> {
    let frame = encode(header, records)?;
    out.write_all(&frame).await?;
    out.flush().await?;
    Ok(())
}

/// Read one frame; `None` when the peer closed the connection between frames.
pub async fn read_frame<R: AsyncRead + Unpin, H: for<'de> Deserialize<'de>>(
    input: &mut R,
) -> Result<Option<(H, Vec<Record>)>, WireError> {
    let mut len = [0u8; 4];
    match input.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(WireError::TooLarge(len));
    }
    // Grown as bytes arrive, so a length that lies costs no memory.
    let mut body = Vec::with_capacity(len.min(1 << 20));
    (&mut *input)
        .take(len as u64)
        .read_to_end(&mut body)
        .await?;
    if body.len() < len {
        return Err(WireError::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    decode(&body).map(Some)
}

fn encode<H: Serialize>(header: &H, records: &[Record]) -> Result<Vec<u8>, WireError> {
    let header =
        serde_json::to_vec(header).map_err(|e| WireError::Malformed(format!("header: {e}")))?;
    let mut out = vec![0u8; 4];
    push_len(&mut out, header.len())?;
    out.extend_from_slice(&header);
    push_len(&mut out, records.len())?;
    for record in records {
        match &record.key {
            Some(key) => {
                push_len(&mut out, key.len())?;
                out.extend_from_slice(key);
            }
            None => out.extend_from_slice(&u32::MAX.to_be_bytes()),
        }
        push_len(&mut out, record.value.len())?;
        out.extend_from_slice(&record.value);
    }
    let body = out.len() - 4;
    if body > MAX_FRAME {
        return Err(WireError::TooLarge(body));
    }
    out[..4].copy_from_slice(&(body as u32).to_be_bytes());
    Ok(out)
}

fn push_len(out: &mut Vec<u8>, len: usize) -> Result<(), WireError> {
    let len = u32::try_from(len)
        .ok()
        .filter(|l| *l != u32::MAX)
        .ok_or(WireError::TooLarge(len))?;
    out.extend_from_slice(&len.to_be_bytes());
    Ok(())
}

fn decode<H: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<(H, Vec<Record>), WireError> {
    let mut cursor = Cursor { body, at: 0 };
    let header_len = cursor
        .len()?
        .ok_or_else(|| malformed("header has no length"))?;
    let header = serde_json::from_slice(cursor.take(header_len)?)
        .map_err(|e| WireError::Malformed(format!("header: {e}")))?;
    let count = cursor.len()?.ok_or_else(|| malformed("no record count"))?;
    // Each record takes at least 8 bytes: a count past that is a lie.
    if count > body.len() / 8 {
        return Err(malformed("record count larger than the frame"));
    }
    let mut records = Vec::with_capacity(count);
    for _ in 0..count {
        let key = match cursor.len()? {
            Some(len) => Some(cursor.take(len)?.to_vec()),
            None => None,
        };
        let value_len = cursor
            .len()?
            .ok_or_else(|| malformed("value has no length"))?;
        records.push(Record {
            key,
            value: cursor.take(value_len)?.to_vec(),
        });
    }
    if cursor.at != body.len() {
        return Err(malformed("bytes after the last record"));
    }
    Ok((header, records))
}

fn malformed(what: &str) -> WireError {
    WireError::Malformed(what.to_string())
}

struct Cursor<'a> {
    body: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.body.len())
            .ok_or_else(|| malformed("a length runs past the end of the frame"))?;
        let bytes = &self.body[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    /// A length field; `None` for the u32::MAX "absent" marker.
    fn len(&mut self) -> Result<Option<usize>, WireError> {
        let raw = u32::from_be_bytes(self.take(4)?.try_into().expect("four bytes"));
        Ok((raw != u32::MAX).then_some(raw as usize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(records: Vec<Record>) {
        let header = Request::Next { max: 7, wait_ms: 9 };
        let frame = encode(&header, &records).unwrap();
        let (back, got): (Request, Vec<Record>) = decode(&frame[4..]).unwrap();
        assert!(matches!(back, Request::Next { max: 7, wait_ms: 9 }));
        assert_eq!(got, records);
    }

    #[test]
    fn frames_round_trip() {
        round_trip(vec![]);
        round_trip(vec![
            Record::keyed("k", "v"),
            Record {
                key: None,
                value: vec![0, 255, 1],
            },
            Record::keyed("", ""),
        ]);
    }

    #[test]
    fn every_truncation_and_every_flipped_length_is_an_error_not_a_panic() {
        let frame = encode(&Response::Ok, &[Record::keyed("key", "value")]).unwrap();
        let body = &frame[4..];
        for cut in 0..body.len() {
            assert!(decode::<Response>(&body[..cut]).is_err(), "cut at {cut}");
        }
        for at in 0..body.len() {
            for byte in [0u8, 0x7f, 0xff] {
                let mut bad = body.to_vec();
                bad[at] = byte;
                let _ = decode::<Response>(&bad);
            }
        }
    }

    #[tokio::test]
    async fn a_frame_over_the_limit_is_refused_before_it_is_read() {
        let mut input: &[u8] = &((MAX_FRAME as u32) + 1).to_be_bytes();
        let err = read_frame::<_, Response>(&mut input).await.unwrap_err();
        assert!(matches!(err, WireError::TooLarge(_)), "{err}");
    }
}
