//! What an attempt read of a streaming body, kept for a retry after that
//! attempt never reached a server.

use std::sync::Mutex;

use bytes::Bytes;
use http_body::Frame;

use super::{Shared, UNSENT_REPLAY_FRAMES, UNSENT_REPLAY_MAX};

/// The data frames an attempt read from a streaming body, until it ends
/// (then published to `Shared::read`) or spoils (past the bounds, a
/// trailers frame, an error).
#[derive(Default)]
pub(super) struct Record {
    frames: Vec<Bytes>,
    len: usize,
    /// Nothing more to record: spoiled, or published.
    closed: bool,
}

impl Record {
    pub(super) fn push(&mut self, frame: &Frame<Bytes>) {
        if self.closed {
            return;
        }
        match frame.data_ref() {
            Some(data)
                if self.len.saturating_add(data.len()) <= UNSENT_REPLAY_MAX
                    && self.frames.len() < UNSENT_REPLAY_FRAMES =>
            {
                self.len += data.len();
                self.frames.push(data.clone());
            }
            _ => self.close(),
        }
    }

    pub(super) fn close(&mut self) {
        self.closed = true;
        self.frames = Vec::new();
    }

    /// The body ended: what was read is the whole body.
    pub(super) fn publish<B>(&mut self, slot: &Mutex<Shared<B>>) {
        if self.closed {
            return;
        }
        let whole = match self.frames.as_slice() {
            [] => Bytes::new(),
            [one] => one.clone(),
            many => Bytes::from(many.concat()),
        };
        if let Ok(mut shared) = slot.lock() {
            shared.read = Some(whole);
        }
        self.close();
    }
}
