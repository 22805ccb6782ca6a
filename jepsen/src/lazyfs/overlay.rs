//! The unsynced state of one file: what was written or truncated since the last fsync.
//!
//! This is the decision half of lazyfs: it does no I/O. A read asks the caller for the backing
//! bytes it needs; an fsync asks the overlay for its [`Overlay::writeback`] plan and performs it.
//!
//! What must hold (checked by [`Overlay::validate`] after every change in debug builds):
//! - extents are non-empty, do not overlap, and each ends at or before `size`;
//! - `floor <= size` and `floor <= base_len`: backing bytes at or past `floor` are hidden;
//! - `dirty_bytes` is the sum of the extents' lengths.

use std::collections::BTreeMap;
use std::io;

/// The pending contents of one file, laid over its backing file.
///
/// The file as a reader sees it is: `size` bytes, of which `[0, floor)` come from the backing
/// file (zeros past its end), `[floor, size)` are zeros, and every extent overrides both.
#[derive(Debug, Clone)]
pub struct Overlay {
    /// Length of the backing file when the overlay was created. The backing file is not written
    /// while an overlay exists, so this stays its length.
    base_len: u64,
    /// Logical size of the file.
    size: u64,
    /// The smallest size the file was truncated to since the overlay was created; backing data
    /// from here on was cut off and must not show through again when the file grows back.
    floor: u64,
    /// Written data by start offset.
    extents: BTreeMap<u64, Vec<u8>>,
    dirty_bytes: u64,
}

/// One step of writing an overlay back to its backing file, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WritebackStep<'a> {
    SetLen(u64),
    Write { offset: u64, data: &'a [u8] },
}

impl Overlay {
    /// An overlay over a backing file of `base_len` bytes, with nothing pending yet.
    pub fn new(base_len: u64) -> Self {
        Self {
            base_len,
            size: base_len,
            floor: base_len,
            extents: BTreeMap::new(),
            dirty_bytes: 0,
        }
    }

    /// The logical size of the file.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes of written data held (not counting size changes, which cost nothing).
    pub fn dirty_bytes(&self) -> u64 {
        self.dirty_bytes
    }

    /// Record a write of `data` at `offset`, growing the file if it ends past `size`.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let end = offset + data.len() as u64;
        self.size = self.size.max(end);

        // The extent starting at or before `offset`, if any, as (start, end).
        let before = self
            .extents
            .range(..=offset)
            .next_back()
            .map(|(start, bytes)| (*start, *start + bytes.len() as u64));
        if let Some((start, ext_end)) = before {
            // A rewrite inside one extent, the common case for a B-tree rewriting its pages.
            if ext_end >= end {
                let bytes = self.extents.get_mut(&start).expect("extent just seen");
                let at = (offset - start) as usize;
                bytes[at..at + data.len()].copy_from_slice(data);
                self.debug_validate();
                return;
            }
            // An append right after an extent with nothing after it to cut: grow it in place
            // rather than copying it, so a sequential writer costs linear time.
            if ext_end == offset && self.extents.range(offset..end).next().is_none() {
                let bytes = self.extents.get_mut(&start).expect("extent just seen");
                bytes.extend_from_slice(data);
                self.dirty_bytes += data.len() as u64;
                self.debug_validate();
                return;
            }
        }

        self.cut(offset, end);
        self.extents.insert(offset, data.to_vec());
        self.dirty_bytes += data.len() as u64;
        self.debug_validate();
    }

    /// Record a change of size (truncate or extend).
    pub fn set_len(&mut self, size: u64) {
        if size < self.size {
            self.cut(size, u64::MAX);
            self.floor = self.floor.min(size);
        }
        self.size = size;
        self.debug_validate();
    }

    /// Fill `buf` with the file's bytes from `offset`, returning how many there are (0 at or
    /// past the end). `read_backing(offset, buf)` must fill `buf` from the backing file, leaving
    /// zeros past its end; it is only asked for bytes below `floor`.
    pub fn read(
        &self,
        offset: u64,
        buf: &mut [u8],
        mut read_backing: impl FnMut(u64, &mut [u8]) -> io::Result<()>,
    ) -> io::Result<usize> {
        if offset >= self.size {
            return Ok(0);
        }
        let n = (buf.len() as u64).min(self.size - offset) as usize;
        let buf = &mut buf[..n];
        buf.fill(0);
        let end = offset + n as u64;

        let from_backing = end.min(self.floor).saturating_sub(offset) as usize;
        if from_backing > 0 {
            read_backing(offset, &mut buf[..from_backing])?;
        }

        let first = self
            .extents
            .range(..offset)
            .next_back()
            .map(|(start, _)| *start)
            .unwrap_or(offset);
        for (&start, bytes) in self.extents.range(first..end) {
            let ext_end = start + bytes.len() as u64;
            let lo = start.max(offset);
            let hi = ext_end.min(end);
            if lo >= hi {
                continue;
            }
            buf[(lo - offset) as usize..(hi - offset) as usize]
                .copy_from_slice(&bytes[(lo - start) as usize..(hi - start) as usize]);
        }
        Ok(n)
    }

    /// The steps that make the backing file equal to what readers see. Idempotent: after a
    /// failure part-way, performing the whole plan again is correct.
    pub fn writeback(&self) -> Vec<WritebackStep<'_>> {
        let mut steps = Vec::with_capacity(self.extents.len() + 2);
        if self.floor < self.base_len {
            steps.push(WritebackStep::SetLen(self.floor));
        }
        let mut len = self.floor;
        for (&offset, data) in &self.extents {
            steps.push(WritebackStep::Write { offset, data });
            len = len.max(offset + data.len() as u64);
        }
        if len != self.size {
            steps.push(WritebackStep::SetLen(self.size));
        }
        steps
    }

    /// Remove the written data in `[from, to)`, keeping what lies either side.
    fn cut(&mut self, from: u64, to: u64) {
        // An extent starting before `from` may reach into the range.
        if let Some((&start, bytes)) = self.extents.range_mut(..from).next_back() {
            let ext_end = start + bytes.len() as u64;
            if ext_end > from {
                let keep = (from - start) as usize;
                let tail = if ext_end > to {
                    Some(bytes[(to - start) as usize..].to_vec())
                } else {
                    None
                };
                self.dirty_bytes -= bytes.len() as u64 - keep as u64;
                bytes.truncate(keep);
                if let Some(tail) = tail {
                    self.dirty_bytes += tail.len() as u64;
                    self.extents.insert(to, tail);
                }
            }
        }
        // Extents starting inside the range: drop them, keeping any part past `to`.
        let inside: Vec<u64> = self.extents.range(from..to).map(|(s, _)| *s).collect();
        for start in inside {
            let bytes = self.extents.remove(&start).expect("extent just listed");
            self.dirty_bytes -= bytes.len() as u64;
            let ext_end = start + bytes.len() as u64;
            if ext_end > to {
                let tail = bytes[(to - start) as usize..].to_vec();
                self.dirty_bytes += tail.len() as u64;
                self.extents.insert(to, tail);
            }
        }
    }

    fn debug_validate(&self) {
        if cfg!(debug_assertions)
            && let Err(broken) = self.validate()
        {
            panic!("lazyfs overlay invariant broken: {broken}");
        }
    }

    /// Check the invariants listed in the module doc.
    pub fn validate(&self) -> Result<(), String> {
        if self.floor > self.size {
            return Err(format!("floor {} > size {}", self.floor, self.size));
        }
        if self.floor > self.base_len {
            return Err(format!("floor {} > base_len {}", self.floor, self.base_len));
        }
        let mut prev_end = 0;
        let mut total = 0;
        for (&start, bytes) in &self.extents {
            if bytes.is_empty() {
                return Err(format!("empty extent at {start}"));
            }
            if start < prev_end {
                return Err(format!(
                    "extent at {start} overlaps one ending at {prev_end}"
                ));
            }
            prev_end = start + bytes.len() as u64;
            if prev_end > self.size {
                return Err(format!("extent ends at {prev_end} past size {}", self.size));
            }
            total += bytes.len() as u64;
        }
        if total != self.dirty_bytes {
            return Err(format!(
                "dirty_bytes {} != extents' {total}",
                self.dirty_bytes
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A file as two byte vectors: what is durable and what readers see.
    struct Model {
        durable: Vec<u8>,
        visible: Vec<u8>,
    }

    #[derive(Debug, Clone)]
    enum Step {
        Write(u64, Vec<u8>),
        SetLen(u64),
        Read(u64, usize),
        Fsync,
        Crash,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (0u64..96, proptest::collection::vec(any::<u8>(), 0..40))
                .prop_map(|(o, d)| Step::Write(o, d)),
            2 => (0u64..128).prop_map(Step::SetLen),
            3 => (0u64..140, 0usize..64).prop_map(|(o, n)| Step::Read(o, n)),
            1 => Just(Step::Fsync),
            1 => Just(Step::Crash),
        ]
    }

    fn apply(durable: &mut Vec<u8>, plan: &[WritebackStep<'_>]) {
        for s in plan {
            match s {
                WritebackStep::SetLen(n) => durable.resize(*n as usize, 0),
                WritebackStep::Write { offset, data } => {
                    let end = *offset as usize + data.len();
                    if durable.len() < end {
                        durable.resize(end, 0);
                    }
                    durable[*offset as usize..end].copy_from_slice(data);
                }
            }
        }
    }

    proptest! {
        /// Reads through the overlay match a plain byte vector; fsync makes the backing equal to
        /// it; a crash returns to the last fsync.
        #[test]
        fn overlay_matches_a_byte_vector(
            initial in proptest::collection::vec(any::<u8>(), 0..64),
            steps in proptest::collection::vec(step(), 1..60),
        ) {
            let mut m = Model { durable: initial.clone(), visible: initial };
            let mut overlay: Option<Overlay> = None;
            for s in steps {
                match s {
                    Step::Write(off, data) => {
                        let o = overlay.get_or_insert_with(|| Overlay::new(m.durable.len() as u64));
                        o.write(off, &data);
                        if !data.is_empty() {
                            let end = off as usize + data.len();
                            if m.visible.len() < end {
                                m.visible.resize(end, 0);
                            }
                            m.visible[off as usize..end].copy_from_slice(&data);
                        }
                    }
                    Step::SetLen(n) => {
                        let o = overlay.get_or_insert_with(|| Overlay::new(m.durable.len() as u64));
                        o.set_len(n);
                        m.visible.resize(n as usize, 0);
                    }
                    Step::Read(off, n) => {
                        let mut buf = vec![0xAA; n];
                        let got = match &overlay {
                            Some(o) => o.read(off, &mut buf, |at, out| {
                                for (i, b) in out.iter_mut().enumerate() {
                                    *b = m.durable.get(at as usize + i).copied().unwrap_or(0);
                                }
                                Ok(())
                            }).unwrap(),
                            None => {
                                let from = (off as usize).min(m.durable.len());
                                let to = (off as usize + n).min(m.durable.len());
                                buf[..to - from].copy_from_slice(&m.durable[from..to]);
                                to - from
                            }
                        };
                        let from = (off as usize).min(m.visible.len());
                        let to = (off as usize + n).min(m.visible.len());
                        prop_assert_eq!(&buf[..got], &m.visible[from..to]);
                    }
                    Step::Fsync => {
                        if let Some(o) = overlay.take() {
                            let plan = o.writeback();
                            apply(&mut m.durable, &plan);
                            // Idempotent: a retry after a failure part-way ends the same.
                            let once = m.durable.clone();
                            apply(&mut m.durable, &plan);
                            prop_assert_eq!(&once, &m.durable);
                        }
                        prop_assert_eq!(&m.durable, &m.visible);
                    }
                    Step::Crash => {
                        overlay = None;
                        m.visible = m.durable.clone();
                    }
                }
                if let Some(o) = &overlay {
                    prop_assert_eq!(o.validate(), Ok(()));
                    prop_assert_eq!(o.size(), m.visible.len() as u64);
                }
            }
        }
    }

    #[test]
    fn sequential_appends_grow_one_extent() {
        let mut o = Overlay::new(0);
        for i in 0..100u64 {
            o.write(i * 10, &[i as u8; 10]);
        }
        assert_eq!(o.extents.len(), 1);
        assert_eq!(o.dirty_bytes(), 1000);
    }

    /// Truncating below the backing length and growing back must read zeros, not the old bytes.
    #[test]
    fn truncated_backing_bytes_stay_hidden_after_regrowth() {
        let backing = [7u8; 16];
        let mut o = Overlay::new(16);
        o.set_len(4);
        o.set_len(16);
        let mut buf = [1u8; 16];
        let n = o
            .read(0, &mut buf, |at, out| {
                out.copy_from_slice(&backing[at as usize..at as usize + out.len()]);
                Ok(())
            })
            .unwrap();
        assert_eq!(n, 16);
        assert_eq!(&buf[..4], &[7; 4]);
        assert_eq!(&buf[4..], &[0; 12]);
        assert_eq!(
            o.writeback(),
            vec![WritebackStep::SetLen(4), WritebackStep::SetLen(16)]
        );
    }
}
