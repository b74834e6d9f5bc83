//! The streaming decoder: `serde` seeds that walk the envelope
//! (`{"applications": {"application": [{"instance": [...]}]}}`) and turn
//! each record into an instance as soon as it is read, counting elements
//! against the budget and checking the deadline as they go.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::keys::Keys;
use super::raw::{RawInstance, RecordSeed, Scalar, Text};
use super::{Application, Applications, ParseOptions, RecordError, Rejected, WireError, convert};

/// How often (in elements) the deadline is checked.
const DEADLINE_EVERY: usize = 256;

/// Skipped records, counted per reason, for the one warning per payload,
/// and the malformed ones among them, for the payload-level check (see
/// [`Ctx::decode`]).
#[derive(Debug, Default)]
pub(super) struct Tally {
    pub(super) records: usize,
    /// Records (and non-object list elements) that are malformed
    /// ([`RecordError::is_malformed`]), over the whole payload.
    malformed: usize,
    /// The first malformed record's reason.
    first_malformed: Option<RecordError>,
    pub(super) skipped: BTreeMap<RecordError, usize>,
    /// The first skipped record's app name and id as the warning shows
    /// them: registrant text, so cut and escaped
    /// ([`quote`](crate::error::quote)).
    pub(super) first: Option<(String, String)>,
}

/// State shared by the seeds of one decode.
pub(super) struct Ctx {
    pub(super) options: ParseOptions,
    deadline: Option<Instant>,
    elements: Cell<usize>,
    failure: RefCell<Option<WireError>>,
    pub(super) tally: RefCell<Tally>,
    /// The instances of the application being read. Each application's
    /// list starts with room for as many as the previous one had (see
    /// [`Ctx::take_instances`]), so a registry of like-sized applications
    /// makes one allocation per application instead of growing every list
    /// by doubling (each large reallocation made glibc consolidate its free
    /// lists).
    scratch: RefCell<Vec<super::EurekaInstance>>,
    /// Zones and service names shared across the payload's instances.
    strings: RefCell<convert::Interner>,
    /// Metadata keys shared across the payload's instances.
    keys: RefCell<Keys>,
}

impl Ctx {
    pub(super) fn new(options: ParseOptions, deadline: Option<Instant>) -> Self {
        Self {
            options,
            deadline,
            elements: Cell::new(0),
            failure: RefCell::new(None),
            tally: RefCell::new(Tally::default()),
            scratch: RefCell::new(Vec::new()),
            strings: RefCell::new(convert::Interner::default()),
            keys: RefCell::new(Keys::new(options.max_metadata_entries)),
        }
    }

    /// Records `err` as the reason the decode stops, and returns a serde
    /// error that unwinds the decoder.
    fn fail<E: de::Error>(&self, err: WireError) -> E {
        *self.failure.borrow_mut() = Some(err);
        E::custom("decode refused")
    }

    /// Counts one element (an application or an instance record) against
    /// the budget; checks the deadline every [`DEADLINE_EVERY`] elements.
    fn count<E: de::Error>(&self) -> Result<(), E> {
        let n = self.elements.get() + 1;
        self.elements.set(n);
        if n > self.options.max_instances {
            return Err(self.fail(WireError::TooManyInstances {
                limit: self.options.max_instances,
            }));
        }
        if n % DEADLINE_EVERY == 0 && self.deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(self.fail(WireError::Deadline));
        }
        Ok(())
    }

    /// The instances of the application just read. The list itself is
    /// handed over (no copy), and the next application's list starts with
    /// room for as many (applications are usually of a size); a list that
    /// grew to more than a quarter beyond its length is shrunk, so a result
    /// holds little slack.
    fn take_instances(&self) -> Vec<super::EurekaInstance> {
        let mut scratch = self.scratch.borrow_mut();
        let next = Vec::with_capacity(scratch.len());
        let mut instances = std::mem::replace(&mut *scratch, next);
        if instances.capacity() - instances.len() > instances.len() / 4 {
            instances.shrink_to_fit();
        }
        instances
    }

    /// Decodes `{"<key>": ...}` from `body` with `seed` for the inner value.
    ///
    /// A payload whose records are all malformed (at least one, and not
    /// one well-formed, in every application together) is refused with
    /// [`WireError::AllRecordsMalformed`]: the server is sending garbage,
    /// and a caller keeps its last good list. An application whose records
    /// are all malformed beside other applications with well-formed ones
    /// is kept with those records skipped (listed in its `rejected`), as
    /// the Java client decodes per record: one bad registrant must not
    /// stop the updates of every other application.
    pub(super) fn decode<'de, S>(
        &self,
        body: &'de [u8],
        key: &'static str,
        seed: S,
    ) -> Result<S::Value, WireError>
    where
        S: DeserializeSeed<'de>,
    {
        // One UTF-8 check of the whole body, then a `&str` reader, which
        // takes each string as it is instead of checking it again.
        let text = std::str::from_utf8(body).map_err(|e| not_utf8(body, e.valid_up_to()))?;
        let mut de = serde_json::Deserializer::from_str(text);
        let result = de
            .deserialize_any(Root { key, seed })
            .and_then(|v| de.end().map(|()| v));
        match result {
            Ok(Some(value)) => {
                let tally = self.tally.borrow();
                match tally.first_malformed {
                    Some(first) if tally.malformed == tally.records => {
                        Err(WireError::AllRecordsMalformed {
                            records: tally.records,
                            first,
                        })
                    }
                    _ => Ok(value),
                }
            }
            Ok(None) => Err(WireError::NoRoot { key }),
            Err(e) => Err(self.failure.borrow_mut().take().unwrap_or_else(|| {
                if self.keys.borrow().over_budget() {
                    WireError::TooMuchMetadata {
                        limit: self.options.max_metadata_entries,
                    }
                } else {
                    WireError::from_json(e)
                }
            })),
        }
    }
}

/// A body that is not UTF-8 is not JSON (RFC 8259 §8.1): a syntax error
/// placed at the first bad byte, line and column counted from 1 in bytes
/// as `serde_json` counts them.
fn not_utf8(body: &[u8], at: usize) -> WireError {
    let before = body.get(..at).unwrap_or(body);
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    WireError::Syntax {
        line,
        column: at - line_start + 1,
    }
}

/// The root object: finds `key`, ignores everything else.
struct Root<S> {
    key: &'static str,
    seed: S,
}

impl<'de, S: DeserializeSeed<'de>> Visitor<'de> for Root<S> {
    type Value = Option<S::Value>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an object with `{}`", self.key)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut seed = Some(self.seed);
        let mut found = None;
        while let Some(key) = map.next_key::<Text<'de>>()? {
            match seed.take() {
                Some(s) if key.0 == self.key => found = Some(map.next_value_seed(s)?),
                other => {
                    seed = other;
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(found)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// One application being read: records are converted as they arrive once
/// the name is known (the server writes `name` first), else kept raw until
/// the object ends.
struct AppBuilder<'de> {
    name: Option<String>,
    /// `name`, shared by the instances (made at the first conversion).
    shared_name: Option<Arc<str>>,
    app: Application,
    pending: Vec<RawInstance<'de>>,
    records: usize,
}

impl<'de> AppBuilder<'de> {
    /// Takes one list element: a record (`Some`), converted at once when the
    /// name is known, or something that is not an object.
    fn push(&mut self, ctx: &Ctx, record: Option<&mut RawInstance<'de>>) {
        self.records += 1;
        match record {
            None => self.reject(ctx, RecordError::NotAnObject, None),
            Some(raw) if self.name.is_some() => self.convert(ctx, raw),
            Some(raw) => self.pending.push(std::mem::take(raw)),
        }
    }

    /// Converts one record into the shared scratch list (see
    /// [`Ctx::scratch`]).
    fn convert(&mut self, ctx: &Ctx, raw: &mut RawInstance<'de>) {
        let name = self.shared_name.get_or_insert_with(|| {
            Arc::from(self.name.as_deref().unwrap_or_default())
        });
        let converted = convert::convert(raw, name, &ctx.options, &mut ctx.strings.borrow_mut());
        match converted {
            Ok(instance) => ctx.scratch.borrow_mut().push(instance),
            Err(reason) => self.reject(ctx, reason, Some(raw)),
        }
    }

    fn reject(&mut self, ctx: &Ctx, reason: RecordError, raw: Option<&RawInstance<'de>>) {
        let (id, raw_status, action) = raw.map(convert::identity).unwrap_or_default();
        let mut tally = ctx.tally.borrow_mut();
        if reason.is_malformed() {
            tally.malformed += 1;
            tally.first_malformed.get_or_insert(reason);
        }
        *tally.skipped.entry(reason).or_default() += 1;
        if tally.first.is_none() {
            // Registrant text: a name with CR/LF would forge log lines, a
            // 1 MiB id would make a 1 MiB warning at every fetch.
            let name = crate::error::quote(self.name.as_deref().unwrap_or_default());
            let id = id.as_deref().map_or_else(|| "none".to_owned(), crate::error::quote);
            tally.first = Some((name, id));
        }
        if raw.is_none() {
            // Not an object: nothing to identify or count in the hash, so
            // only the tally keeps it (a list of millions of zeros costs
            // no memory per element).
            return;
        }
        self.app.rejected.push(Rejected {
            id,
            reason,
            raw_status,
            action,
        });
    }

    /// The application read. Its malformed records only count towards the
    /// payload-level check in [`Ctx::decode`].
    fn finish(mut self, ctx: &Ctx) -> Result<Application, WireError> {
        let name = self.name.clone().ok_or(WireError::NoName)?;
        self.app.name = name;
        for mut raw in std::mem::take(&mut self.pending) {
            self.convert(ctx, &mut raw);
        }
        self.app.instances = ctx.take_instances();
        ctx.tally.borrow_mut().records += self.records;
        Ok(self.app)
    }
}

/// Reads one `application` object.
pub(super) struct AppSeed<'c> {
    pub(super) ctx: &'c Ctx,
}

impl<'de> DeserializeSeed<'de> for AppSeed<'_> {
    type Value = Application;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Application, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for AppSeed<'_> {
    type Value = Application;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an application object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Application, A::Error> {
        let ctx = self.ctx;
        ctx.scratch.borrow_mut().clear();
        let mut app = AppBuilder {
            name: None,
            shared_name: None,
            app: Application::default(),
            pending: Vec::new(),
            records: 0,
        };
        while let Some(key) = map.next_key::<Text<'de>>()? {
            match key.0.as_ref() {
                "name" => {
                    let name = map.next_value::<Scalar<'de>>()?;
                    app.name = name.string().ok().flatten().map(str::to_owned);
                    app.shared_name = None;
                }
                "instance" => map.next_value_seed(Instances { ctx, app: &mut app })?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        app.finish(ctx).map_err(|e| ctx.fail(e))
    }
}

/// An `instance` value: a list, one object, or null.
struct Instances<'c, 'de> {
    ctx: &'c Ctx,
    app: &'c mut AppBuilder<'de>,
}

impl<'de> DeserializeSeed<'de> for Instances<'_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Instances<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("instance records")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        loop {
            // Each record is read in place into a fresh slot on the stack.
            let mut raw = RawInstance::default();
            let seed = RecordSeed {
                slot: &mut raw,
                keys: &mut self.ctx.keys.borrow_mut(),
            };
            let Some(is_object) = seq.next_element_seed(seed)? else {
                return Ok(());
            };
            self.ctx.count()?;
            self.app.push(self.ctx, is_object.then_some(&mut raw));
        }
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let mut raw = RawInstance::default();
        RecordSeed {
            slot: &mut raw,
            keys: &mut self.ctx.keys.borrow_mut(),
        }
        .visit_map(map)?;
        self.ctx.count()?;
        self.app.push(self.ctx, Some(&mut raw));
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.one_scalar()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.one_scalar()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.one_scalar()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.one_scalar()
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.one_scalar()
    }
}

impl Instances<'_, '_> {
    fn one_scalar<E: de::Error>(self) -> Result<(), E> {
        self.ctx.count()?;
        self.app.push(self.ctx, None);
        Ok(())
    }
}

/// Reads one `applications` object (`/apps`, `/apps/delta`, `/vips`).
pub(super) struct AppsSeed<'c> {
    pub(super) ctx: &'c Ctx,
}

impl<'de> DeserializeSeed<'de> for AppsSeed<'_> {
    type Value = Applications;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Applications, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for AppsSeed<'_> {
    type Value = Applications;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an applications object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Applications, A::Error> {
        let text = |s: Scalar<'_>| s.text().map(std::borrow::Cow::into_owned);
        let mut apps = Applications::default();
        let mut known_key = false;
        while let Some(key) = map.next_key::<Text<'de>>()? {
            match key.0.as_ref() {
                "apps__hashcode" => apps.apps_hashcode = text(map.next_value()?),
                "versions__delta" => apps.versions_delta = text(map.next_value()?),
                "application" => map.next_value_seed(AppList {
                    ctx: self.ctx,
                    out: &mut apps.applications,
                })?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            }
            known_key = true;
        }
        if known_key {
            Ok(apps)
        } else {
            Err(self.ctx.fail(WireError::NotRegistry))
        }
    }
}

/// An `application` value: a list, one object, or null.
struct AppList<'c> {
    ctx: &'c Ctx,
    out: &'c mut Vec<Application>,
}

impl<'de> DeserializeSeed<'de> for AppList<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for AppList<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of applications")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(app) = seq.next_element_seed(AppSeed { ctx: self.ctx })? {
            self.ctx.count()?;
            self.out.push(app);
        }
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        self.ctx.count()?;
        self.out.push(AppSeed { ctx: self.ctx }.visit_map(map)?);
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}
