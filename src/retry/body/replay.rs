//! [`ReplayBody`] as a [`TryCloneBody`]: which copies it gives, and the
//! declared length a stream checks as it is sent.

use std::sync::Arc;

use bytes::Bytes;

use super::{Inner, LengthCheck, Record, ReplayBody, TryCloneBody};
use crate::retry::Upload;

impl<B> TryCloneBody for ReplayBody<B> {
    fn exact_len(&self) -> Option<u64> {
        match &self.inner {
            Inner::Buffered(bytes) => Some(bytes.as_ref().map_or(0, Bytes::len) as u64),
            Inner::Streaming { .. } => None,
        }
    }

    fn is_replayable(&self) -> bool {
        match &self.inner {
            Inner::Buffered(_) => true,
            Inner::Streaming {
                slot, taken: None, ..
            } => slot.lock().map(|s| s.stream.is_some()).unwrap_or(false),
            Inner::Streaming { taken: Some(_), .. } => false,
        }
    }

    fn try_clone_body(&self) -> Option<Self> {
        match &self.inner {
            Inner::Buffered(bytes) => Some(Self {
                inner: Inner::Buffered(bytes.clone()),
            }),
            Inner::Streaming {
                slot,
                taken: None,
                upload,
                length,
                ..
            } => {
                let unstarted = slot.lock().map(|s| s.stream.is_some()).unwrap_or(false);
                unstarted.then(|| Self {
                    inner: Inner::Streaming {
                        slot: Arc::clone(slot),
                        taken: None,
                        upload: upload.clone(),
                        record: Record::default(),
                        length: length.as_ref().map(LengthCheck::restart),
                    },
                })
            }
            Inner::Streaming { taken: Some(_), .. } => None,
        }
    }

    /// A stream's upload; `None` for a buffered body (in memory, sent at
    /// once).
    fn upload(&self) -> Option<Upload> {
        match &self.inner {
            Inner::Buffered(_) => None,
            Inner::Streaming { upload, .. } => Some(upload.clone()),
        }
    }

    /// Also a stream that an attempt which never reached a server read to
    /// its end (within [`UNSENT_REPLAY_MAX`](super::UNSENT_REPLAY_MAX) bytes): a buffered copy of
    /// what it read.
    fn try_clone_unsent(&self) -> Option<Self> {
        if let Some(copy) = self.try_clone_body() {
            return Some(copy);
        }
        let Inner::Streaming {
            slot, taken: None, ..
        } = &self.inner
        else {
            return None;
        };
        let read = slot.lock().ok()?.read.clone()?;
        Some(Self::from_bytes(read))
    }

    /// A stream checks it as it is sent; a buffered body's length is
    /// known before (and checked then).
    fn check_len(&mut self, declared: u64) {
        if let Inner::Streaming { length, .. } = &mut self.inner {
            *length = Some(LengthCheck::new(declared));
        }
    }

    fn is_replayable_unsent(&self) -> bool {
        self.is_replayable()
            || matches!(&self.inner, Inner::Streaming { slot, taken: None, .. }
                if slot.lock().is_ok_and(|s| s.read.is_some()))
    }
}
