//! A queue bounded by rows and by bytes: a sender waits while either bound is reached, so a
//! slow consumer slows its producer and memory stays flat. An item larger than a bound is
//! still admitted (alone), so nothing can deadlock on an oversized batch.

use std::sync::Arc;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

struct Item<T> {
    value: T,
    _rows: OwnedSemaphorePermit,
    _bytes: OwnedSemaphorePermit,
}

/// The room an item took in the queue; released on drop.
pub struct Room {
    _rows: OwnedSemaphorePermit,
    _bytes: OwnedSemaphorePermit,
}

/// Sending half.
pub struct QueueSender<T> {
    tx: mpsc::UnboundedSender<Item<T>>,
    rows: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    max_rows: u32,
    max_bytes: u32,
}

/// Receiving half.
pub struct QueueReceiver<T> {
    rx: mpsc::UnboundedReceiver<Item<T>>,
}

/// The receiver is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

/// A queue holding at most `max_rows` rows and `max_bytes` bytes.
pub fn bounded<T>(max_rows: usize, max_bytes: usize) -> (QueueSender<T>, QueueReceiver<T>) {
    let max_rows = u32::try_from(max_rows).unwrap_or(u32::MAX).max(1);
    let max_bytes = u32::try_from(max_bytes).unwrap_or(u32::MAX).max(1);
    let (tx, rx) = mpsc::unbounded_channel();
    (
        QueueSender {
            tx,
            rows: Arc::new(Semaphore::new(max_rows as usize)),
            bytes: Arc::new(Semaphore::new(max_bytes as usize)),
            max_rows,
            max_bytes,
        },
        QueueReceiver { rx },
    )
}

impl<T> QueueSender<T> {
    /// Enqueue `value`, accounting `rows` and `bytes`; waits for room. Cancel-safe.
    pub async fn send(&self, value: T, rows: usize, bytes: usize) -> Result<(), Closed> {
        let r = u32::try_from(rows).unwrap_or(u32::MAX).min(self.max_rows);
        let b = u32::try_from(bytes).unwrap_or(u32::MAX).min(self.max_bytes);
        let rows = self
            .rows
            .clone()
            .acquire_many_owned(r)
            .await
            .map_err(|_| Closed)?;
        let bytes = self
            .bytes
            .clone()
            .acquire_many_owned(b)
            .await
            .map_err(|_| Closed)?;
        self.tx
            .send(Item {
                value,
                _rows: rows,
                _bytes: bytes,
            })
            .map_err(|_| Closed)
    }
}

impl<T> QueueReceiver<T> {
    /// The next item; `None` once every sender is dropped and the queue is empty.
    /// Cancel-safe. The item's room is released when it is taken.
    pub async fn recv(&mut self) -> Option<T> {
        self.rx.recv().await.map(|i| i.value)
    }

    /// Like [`recv`](Self::recv), but the item's room is released only when the returned
    /// [`Room`] is dropped: for a consumer that holds items beyond taking them.
    pub async fn recv_holding_room(&mut self) -> Option<(T, Room)> {
        self.rx.recv().await.map(|i| {
            (
                i.value,
                Room {
                    _rows: i._rows,
                    _bytes: i._bytes,
                },
            )
        })
    }

    /// Whether nothing is queued right now.
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn blocks_on_rows_and_bytes() {
        let (tx, mut rx) = bounded::<u32>(10, 1000);
        tx.send(1, 6, 10).await.unwrap();
        // 6 + 6 rows > 10: the second send waits until the first is taken.
        let blocked = tokio::time::timeout(Duration::from_millis(50), tx.send(2, 6, 10)).await;
        assert!(blocked.is_err());
        assert_eq!(rx.recv().await, Some(1));
        tx.send(3, 6, 10).await.unwrap();
        assert_eq!(rx.recv().await, Some(3));
        // Bytes bound, and an oversized item is admitted alone.
        tx.send(4, 1, 5000).await.unwrap();
        let blocked = tokio::time::timeout(Duration::from_millis(50), tx.send(5, 1, 1)).await;
        assert!(blocked.is_err());
        assert_eq!(rx.recv().await, Some(4));
        drop(tx);
        assert_eq!(rx.recv().await, None);
    }
}
