//! Fuzzes the frame decoders with arbitrary bytes, delivered in arbitrary
//! pieces: neither may panic, allocate past the limit, or disagree.
#![no_main]

use std::io::{Cursor, Read};

use libfuzzer_sys::fuzz_target;
use threadcenter::frame::{read_frame, FrameBuffer, FrameError};

const LIMIT: usize = 4096;

/// A reader that returns at most `step` bytes per call.
struct Pieces<'a> {
    data: &'a [u8],
    step: usize,
}

impl Read for Pieces<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.data.len().min(self.step).min(buf.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&step, data)) = input.split_first() else { return };
    let step = usize::from(step).max(1);

    // The blocking decoder.
    let mut blocking = Vec::new();
    let mut cursor = Cursor::new(data);
    let mut payload = Vec::new();
    loop {
        match read_frame(&mut cursor, LIMIT, &mut payload) {
            Ok(true) => {
                assert!(payload.len() <= LIMIT);
                blocking.push(payload.clone());
            }
            Ok(false) => break,
            Err(FrameError::Empty) => continue,
            Err(_) => break,
        }
    }

    // The incremental decoder, fed in pieces, must find the same frames.
    let mut incremental = Vec::new();
    let mut buffer = FrameBuffer::with_capacity(16, LIMIT);
    let mut reader = Pieces { data, step };
    'outer: while buffer.read_from(&mut reader).unwrap_or(0) > 0 {
        loop {
            match buffer.next_frame() {
                Ok(Some(frame)) => incremental.push(frame.to_vec()),
                Ok(None) => break,
                Err(FrameError::Empty) => continue,
                Err(_) => break 'outer,
            }
        }
    }
    assert_eq!(blocking, incremental);
});
