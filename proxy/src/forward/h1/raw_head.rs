//! An origin's HTTP/1 response head kept as the bytes read plus where its parts are
//! (issue #18, step 2 of `docs/design/downstream-h1.md`): no field map is built. It is
//! what Sluice's HTTP/1 client reads; a response that goes to an HTTP/1 client through
//! no filter is framed and written from it as it is (its fields in the origin's order
//! and spelling, the edits Sluice makes applied as the bytes are copied out), and every
//! other response is built into a Pingora `ResponseHeader` from it
//! ([`super::response_head::build`]).
//!
//! Each field's name is classified once, when the head is read ([`Name`]), so that the
//! framing's look-ups and the writer's `Date` and `Connection` lines compare a tag, not
//! the name's bytes. The edits a head takes are the ones the framing and the proxy make
//! to a response nobody filters: fields removed by name (`Content-Length` beside a
//! transfer coding), `Transfer-Encoding: chunked` added at the end (a close-delimited
//! body to an HTTP/1.1 client), and the `Date` and `Connection` lines the client's
//! session writes in place of the origin's (`crate::downstream::h1`).

use bytes::Bytes;
use http::StatusCode;
use smallvec::SmallVec;

/// The names the framing and the writer look for, and every other one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Name {
    /// `Content-Length`.
    ContentLength,
    /// `Transfer-Encoding`.
    TransferEncoding,
    /// `Connection`.
    Connection,
    /// `Date`.
    Date,
    /// Any other name.
    Other,
}

impl Name {
    /// The class of a field name (any case).
    #[inline]
    pub fn of(name: &[u8]) -> Name {
        let is = |known: &[u8]| name.eq_ignore_ascii_case(known);
        match name.len() {
            4 if is(b"date") => Name::Date,
            10 if is(b"connection") => Name::Connection,
            14 if is(b"content-length") => Name::ContentLength,
            17 if is(b"transfer-encoding") => Name::TransferEncoding,
            _ => Name::Other,
        }
    }
}

/// A range of the head's bytes (a head is at most 64 KiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Part {
    start: u32,
    end: u32,
}

impl Part {
    /// The part of a head's bytes at `start..end`.
    pub(super) fn new((start, end): (usize, usize)) -> Self {
        Part {
            start: start as u32,
            end: end as u32,
        }
    }

    fn range(&self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }
}

/// The one field Sluice adds to a head it writes as read, as its name and value parts.
const CHUNKED: &[u8] = b"Transfer-Encodingchunked";

/// One field line: its name's class, its name and value (parts of the head's bytes, or
/// of [`CHUNKED`] for the field Sluice added), and whether it was removed.
#[derive(Debug, Clone, Copy)]
pub(super) struct Field {
    class: Name,
    name: Part,
    value: Part,
    removed: bool,
    ours: bool,
}

impl Field {
    /// The line whose name and value are these parts of `bytes`, the head's bytes.
    pub(super) fn new(bytes: &[u8], name: Part, value: Part) -> Self {
        Field {
            class: Name::of(&bytes[name.range()]),
            name,
            value,
            removed: false,
            ours: false,
        }
    }
}

/// The field lines of a head, in order (room for the lines of most heads inline).
pub(super) type Fields = SmallVec<[Field; 16]>;

/// An HTTP/1 response head as read: its bytes, its status, version and reason, and its
/// field lines as parts of the bytes.
#[derive(Debug)]
pub struct RawHead {
    /// The head's bytes, status line to empty line.
    bytes: Bytes,
    /// The status code.
    pub status: StatusCode,
    /// The version the origin wrote.
    pub version: http::Version,
    /// The reason phrase, when the status line had one.
    reason: Option<Part>,
    /// The field lines in order (lines with an empty name left out, as Pingora does).
    fields: Fields,
    /// A value was continued on a further line (obs-fold): its bytes hold the fold.
    folded: bool,
}

impl RawHead {
    /// A head read into `bytes`: its status, version, reason phrase, field lines, and
    /// whether a value holds an obs-fold.
    pub(super) fn new(
        bytes: Bytes,
        status: StatusCode,
        version: http::Version,
        reason: Option<Part>,
        fields: Fields,
        folded: bool,
    ) -> Self {
        RawHead {
            bytes,
            status,
            version,
            reason,
            fields,
            folded,
        }
    }

    /// Whether a value holds an obs-fold. Such a head is not written as it is: building
    /// it into a Pingora head collapses the folds.
    pub fn folded(&self) -> bool {
        self.folded
    }

    /// The reason phrase the origin wrote, if any.
    pub fn reason(&self) -> Option<&[u8]> {
        self.reason.map(|r| &self.bytes[r.range()])
    }

    /// The bytes `field`'s parts are parts of.
    fn source(&self, field: &Field) -> &[u8] {
        if field.ours {
            CHUNKED
        } else {
            &self.bytes
        }
    }

    /// The fields still in the head, in order.
    fn present(&self) -> impl DoubleEndedIterator<Item = &Field> {
        self.fields.iter().filter(|f| !f.removed)
    }

    /// How many fields the head holds.
    pub fn field_count(&self) -> usize {
        self.present().count()
    }

    /// Calls `f` with each field still in the head, in order: its name as written and
    /// its value, sharing the head's bytes.
    pub fn try_each_shared<E>(
        &self,
        mut f: impl FnMut(Bytes, Bytes) -> Result<(), E>,
    ) -> Result<(), E> {
        let chunked = Bytes::from_static(CHUNKED);
        for field in self.present() {
            let source = if field.ours { &chunked } else { &self.bytes };
            f(
                source.slice(field.name.range()),
                source.slice(field.value.range()),
            )?;
        }
        Ok(())
    }

    /// Calls `f` with each field still in the head, in order: its name's class, its
    /// name as written and its value.
    pub fn each(&self, mut f: impl FnMut(Name, &[u8], &[u8])) {
        for field in self.present() {
            let source = self.source(field);
            f(
                field.class,
                &source[field.name.range()],
                &source[field.value.range()],
            );
        }
    }

    /// The values of the fields of class `name` (not [`Name::Other`]), in order.
    pub fn values(&self, name: Name) -> impl DoubleEndedIterator<Item = &[u8]> {
        debug_assert!(name != Name::Other);
        self.present()
            .filter(move |f| f.class == name)
            .map(|f| &self.source(f)[f.value.range()])
    }

    /// Whether a field of class `name` is in the head.
    pub fn contains(&self, name: Name) -> bool {
        self.present().any(|f| f.class == name)
    }

    /// Removes the fields of class `name`.
    pub fn remove(&mut self, name: Name) {
        for f in self.fields.iter_mut().filter(|f| f.class == name) {
            f.removed = true;
        }
    }

    /// Adds `Transfer-Encoding: chunked` after the other fields (the name spelled as a
    /// Pingora head writes it).
    pub fn append_chunked(&mut self) {
        self.fields.push(Field {
            class: Name::TransferEncoding,
            name: Part::new((0, 17)),
            value: Part::new((17, CHUNKED.len())),
            removed: false,
            ours: true,
        });
    }
}
