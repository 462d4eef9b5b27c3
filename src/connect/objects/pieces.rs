//! The memory upload bodies are read into: pieces of 1 MiB, made once and used again, at most
//! a fixed number of them lent at once.
//!
//! A body of the file's size, allocated for each upload and freed after it, grew the heap of
//! every upload thread by the largest file it sent (glibc keeps a thread's freed memory in that
//! thread's arena, and raises its threshold for asking the system directly to the largest block
//! freed): 212 MiB for 16 threads sending 8 MiB files under a 64 MiB budget. Pieces lent from one
//! pool and given back when the store has sent them keep the memory the budget says.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use object_store::PutPayload;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The size of every piece.
pub(crate) const PIECE: usize = 1 << 20;

/// How many pieces `bytes` take.
pub(crate) fn pieces_for(bytes: u64) -> usize {
    bytes.div_ceil(PIECE as u64) as usize
}

/// The pool: free pieces, and one permit for each piece that may be lent.
pub(crate) struct Pieces {
    free: Mutex<Vec<Vec<u8>>>,
    permits: Arc<Semaphore>,
    capacity: usize,
}

impl Pieces {
    /// A pool lending at most `capacity` pieces at once.
    pub(crate) fn new(capacity: usize) -> Arc<Pieces> {
        Arc::new(Pieces {
            free: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(capacity)),
            capacity,
        })
    }

    /// Room for `bytes`, once that many pieces are free (waiting for other bodies to be sent).
    /// Asking for more than the pool holds is a mistake in the caller's sizes.
    pub(crate) async fn lend(self: &Arc<Self>, bytes: u64) -> Body {
        let n = pieces_for(bytes);
        assert!(
            n <= self.capacity,
            "{bytes} bytes asked of a pool of {} pieces",
            self.capacity
        );
        let mut pieces = Vec::with_capacity(n);
        if n > 0 {
            let mut permits = Arc::clone(&self.permits)
                .acquire_many_owned(n as u32)
                .await
                .expect("the pool's semaphore is never closed");
            for _ in 1..n {
                let one = permits.split(1).expect("n permits were taken");
                pieces.push(self.piece(one));
            }
            pieces.push(self.piece(permits));
        }
        Body { pieces, filled: 0 }
    }

    fn piece(self: &Arc<Self>, permit: OwnedSemaphorePermit) -> Piece {
        let buf = self
            .free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(PIECE));
        Piece {
            buf,
            lent: Some((Arc::clone(self), permit)),
        }
    }
}

/// A piece of memory; given back to its pool when dropped (when the last `Bytes` of it goes).
struct Piece {
    buf: Vec<u8>,
    /// The pool and the permit it was lent under; `None` for a piece beyond what was asked for.
    lent: Option<(Arc<Pieces>, OwnedSemaphorePermit)>,
}

impl AsRef<[u8]> for Piece {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Piece {
    fn drop(&mut self) {
        if let Some((pool, _permit)) = self.lent.take() {
            let mut buf = std::mem::take(&mut self.buf);
            buf.clear();
            pool.free.lock().unwrap_or_else(|p| p.into_inner()).push(buf);
            // The permit is released after the piece is back, so a borrower always finds it.
        }
    }
}

/// Pieces being filled with one request's bytes.
pub(crate) struct Body {
    pieces: Vec<Piece>,
    /// Pieces filled to the brim, before the one being filled.
    filled: usize,
}

impl Body {
    /// Append `bytes`. Bytes beyond the room asked for (a file that grew while being read, which
    /// the reader then refuses) go into pieces of their own, outside the pool.
    pub(crate) fn extend(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.filled == self.pieces.len() {
                self.pieces.push(Piece {
                    buf: Vec::with_capacity(PIECE),
                    lent: None,
                });
            }
            let piece = &mut self.pieces[self.filled].buf;
            let take = (PIECE - piece.len()).min(bytes.len());
            piece.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if piece.len() == PIECE {
                self.filled += 1;
            }
        }
    }

    /// Fill from `read` until it ends: the number of bytes read.
    pub(crate) fn read_from(&mut self, read: &mut impl std::io::Read) -> std::io::Result<u64> {
        let mut chunk = [0u8; 64 << 10];
        let mut n = 0;
        loop {
            match read.read(&mut chunk) {
                Ok(0) => return Ok(n),
                Ok(k) => {
                    self.extend(&chunk[..k]);
                    n += k as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The bytes, as a payload sent without copying; the pieces go back to the pool when the
    /// store is done with it (and every clone of it).
    pub(crate) fn into_payload(self) -> PutPayload {
        self.pieces
            .into_iter()
            .filter(|p| !p.buf.is_empty())
            .map(Bytes::from_owner)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn a_body_holds_its_bytes_in_order_across_pieces() {
        let pool = Pieces::new(4);
        let data: Vec<u8> = (0..(2 * PIECE + 123)).map(|i| (i % 251) as u8).collect();
        let mut body = rt().block_on(pool.lend(data.len() as u64));
        for chunk in data.chunks(70_001) {
            body.extend(chunk);
        }
        let payload = body.into_payload();
        let got: Vec<u8> = payload.iter().flat_map(|b| b.iter().copied()).collect();
        assert_eq!(got, data);
        assert_eq!(payload.iter().count(), 3);
    }

    #[test]
    fn pieces_come_back_when_the_payload_goes_and_are_used_again() {
        let pool = Pieces::new(2);
        let rt = rt();
        let mut body = rt.block_on(pool.lend(2 * PIECE as u64));
        body.extend(&vec![7u8; 2 * PIECE]);
        let payload = body.into_payload();
        let copy = payload.clone();
        assert_eq!(pool.permits.available_permits(), 0);
        drop(payload);
        assert_eq!(pool.permits.available_permits(), 0, "a clone still holds them");
        drop(copy);
        assert_eq!(pool.permits.available_permits(), 2);
        assert_eq!(pool.free.lock().unwrap().len(), 2);
        let body = rt.block_on(pool.lend(PIECE as u64 + 1));
        assert_eq!(pool.free.lock().unwrap().len(), 0, "both free pieces were lent again");
        drop(body);
        assert_eq!(pool.free.lock().unwrap().len(), 2);
    }

    #[test]
    fn a_borrower_waits_until_pieces_are_given_back() {
        let pool = Pieces::new(3);
        let rt = rt();
        let held = rt.block_on(pool.lend(2 * PIECE as u64));
        let waiting = {
            let pool = Arc::clone(&pool);
            async move { pool.lend(2 * PIECE as u64).await }
        };
        rt.block_on(async {
            let mut waiting = Box::pin(waiting);
            let timeout = tokio::time::timeout(std::time::Duration::from_millis(50), &mut waiting).await;
            assert!(timeout.is_err(), "two pieces were lent while only one was free");
            drop(held);
            let body = waiting.await;
            assert_eq!(body.pieces.len(), 2);
        });
    }

    #[test]
    fn bytes_past_the_room_asked_for_are_kept_outside_the_pool() {
        let pool = Pieces::new(1);
        let mut body = rt().block_on(pool.lend(10));
        body.extend(&vec![1u8; PIECE + 5]);
        let payload = body.into_payload();
        assert_eq!(payload.content_length(), PIECE + 5);
        drop(payload);
        assert_eq!(pool.free.lock().unwrap().len(), 1, "only the lent piece goes back");
    }

    #[test]
    fn an_empty_body_takes_nothing() {
        let pool = Pieces::new(1);
        let body = rt().block_on(pool.lend(0));
        assert_eq!(body.into_payload().content_length(), 0);
        assert_eq!(pool.permits.available_permits(), 1);
    }
}
