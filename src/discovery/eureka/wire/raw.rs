//! The typed raw record: one instance as the JSON says it, with strings
//! borrowed from the body wherever they hold no escape.
//!
//! Every field type here accepts any JSON value, so a record with a field
//! of the wrong type is decoded (and then skipped with a [`RecordError`])
//! instead of failing the whole payload mid-stream.
//!
//! [`RecordError`]: super::RecordError

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::Deserialize;

use super::keys::Keys;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// A string borrowed from the body when it holds no escape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Text<'a>(pub(super) Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// [`str::trim`], answered without decoding characters when both ends are
/// visible ASCII (the usual case: every string field is trimmed). Unicode
/// whitespace other than ASCII starts with a byte of 0x80 or more.
pub(super) fn trim(s: &str) -> &str {
    let visible = |b: Option<&u8>| b.is_some_and(|&b| b > b' ' && b < 0x80);
    if visible(s.as_bytes().first()) && visible(s.as_bytes().last()) {
        s
    } else {
        s.trim()
    }
}

/// Any JSON value, kept only if it is a scalar.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Scalar<'a> {
    Str(Cow<'a, str>),
    U64(u64),
    I64(i64),
    F64(f64),
    Bool(bool),
    Null,
    /// An object or a list (skipped without allocating).
    Composite,
}

impl<'a> Scalar<'a> {
    /// A trimmed, non-empty string; `Err` for a non-string.
    pub(super) fn string(&self) -> Result<Option<&str>, ()> {
        match self {
            Scalar::Str(s) => Ok(Some(trim(s)).filter(|s| !s.is_empty())),
            Scalar::Null => Ok(None),
            _ => Err(()),
        }
    }

    /// [`Scalar::text`], owned (a string is moved, not copied, when it
    /// already is).
    pub(super) fn into_text(self) -> Option<String> {
        match self {
            Scalar::Str(s) => Some(s.into_owned()),
            other => other.text().map(Cow::into_owned),
        }
    }

    /// A string, number or bool as text; `None` otherwise.
    pub(super) fn text(&self) -> Option<Cow<'_, str>> {
        match self {
            Scalar::Str(s) => Some(Cow::Borrowed(s.as_ref())),
            Scalar::U64(n) => Some(Cow::Owned(n.to_string())),
            Scalar::I64(n) => Some(Cow::Owned(n.to_string())),
            Scalar::F64(n) => Some(Cow::Owned(n.to_string())),
            Scalar::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
            Scalar::Null | Scalar::Composite => None,
        }
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Scalar::U64(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Scalar::I64(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Scalar::F64(v))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Scalar::Bool(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Composite)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Composite)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Scalar<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

/// A port: `{"$": 8080, "@enabled": "true"}` or a bare number or string.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Port<'a> {
    pub(super) number: Option<Scalar<'a>>,
    pub(super) enabled: Option<Scalar<'a>>,
}

impl<'de: 'a, 'a> Deserialize<'de> for Port<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Port<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut port = Port {
                    number: None,
                    enabled: None,
                };
                while let Some(key) = map.next_key::<Text<'de>>()? {
                    match key.0.as_ref() {
                        "$" => port.number = Some(map.next_value()?),
                        "@enabled" => port.enabled = Some(map.next_value()?),
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(port)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                let composite = ScalarVisitor.visit_seq(seq)?;
                Ok(Port {
                    number: Some(composite),
                    enabled: None,
                })
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                self.bare(ScalarVisitor.visit_borrowed_str(v)?)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                self.bare(ScalarVisitor.visit_str(v)?)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                self.bare(Scalar::U64(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                self.bare(Scalar::I64(v))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                self.bare(Scalar::F64(v))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                self.bare(Scalar::Bool(v))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                self.bare(Scalar::Null)
            }
        }
        impl V {
            fn bare<'a, E>(self, number: Scalar<'a>) -> Result<Port<'a>, E> {
                Ok(Port {
                    number: Some(number),
                    enabled: None,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// Metadata as the instance keeps it: values as text, the XML
/// converter's `@`-keys (`@class`) and non-scalar or null values dropped,
/// keys shared through [`Keys`], built while the record is read (no
/// intermediate list). At most
/// [`MAX_METADATA_ENTRIES`](super::MAX_METADATA_ENTRIES) entries are read,
/// counting dropped ones; past that the rest are skipped and `overflow`
/// is set.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Metadata {
    /// Entries sorted by key, each key once (the last value of a repeated
    /// key).
    pub(super) entries: Vec<(Arc<str>, String)>,
    pub(super) overflow: bool,
    pub(super) wrong_type: bool,
}

/// Reads a `metadata` value: `None` for null (absent), a [`Metadata`]
/// marked `wrong_type` for a scalar or a list.
pub(super) struct MetadataSeed<'s> {
    pub(super) keys: &'s mut Keys,
}

impl<'de> DeserializeSeed<'de> for MetadataSeed<'_> {
    type Value = Option<Metadata>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

fn wrong_type_metadata<E>() -> Result<Option<Metadata>, E> {
    Ok(Some(Metadata {
        wrong_type: true,
        ..Metadata::default()
    }))
}

impl<'de> Visitor<'de> for MetadataSeed<'_> {
    type Value = Option<Metadata>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a metadata object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut meta = Metadata::default();
        let mut read = 0usize;
        while let Some(key) = map.next_key::<Text<'de>>()? {
            if read >= super::MAX_METADATA_ENTRIES {
                meta.overflow = true;
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            read += 1;
            let value = map.next_value::<Scalar<'de>>()?;
            if key.0.starts_with('@') {
                continue;
            }
            if let Some(text) = value.into_text() {
                meta.entries.push((self.keys.get(&key.0), text));
            }
        }
        // What the instance will keep counts against the payload's budget:
        // each key once, the last value winning (as `Metadata` keeps it).
        meta.entries.reverse();
        meta.entries.sort_by(|a, b| a.0.cmp(&b.0));
        meta.entries.dedup_by(|later, first| later.0 == first.0);
        if !self.keys.charge(meta.entries.len()) {
            // The decoder reads `Keys::over_budget` and refuses the
            // payload with `WireError::TooMuchMetadata`.
            return Err(de::Error::custom("metadata budget"));
        }
        Ok(Some(meta))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        ScalarVisitor.visit_seq(seq)?;
        wrong_type_metadata()
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        wrong_type_metadata()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        wrong_type_metadata()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        wrong_type_metadata()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        wrong_type_metadata()
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        wrong_type_metadata()
    }
}

/// `dataCenterInfo.metadata["availability-zone"]`, anything else ignored.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct DataCenterZone<'a>(pub(super) Option<Scalar<'a>>);

impl<'de: 'a, 'a> Deserialize<'de> for DataCenterZone<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Two levels, written out: `{"metadata": {"availability-zone": x}}`.
        struct Outer;
        struct Inner;
        impl<'de> Visitor<'de> for Inner {
            type Value = Option<Scalar<'de>>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut zone = None;
                while let Some(key) = map.next_key::<Text<'de>>()? {
                    if key.0 == "availability-zone" && zone.is_none() {
                        zone = Some(map.next_value::<Scalar<'de>>()?);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(zone)
            }
        }
        struct InnerField<'a>(Option<Scalar<'a>>);
        impl<'de> Deserialize<'de> for InnerField<'de> {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Ok(InnerField(d.deserialize_any(ScalarOr(Inner))?.flatten()))
            }
        }
        impl<'de> Visitor<'de> for Outer {
            type Value = Option<Scalar<'de>>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut zone = None;
                while let Some(key) = map.next_key::<Text<'de>>()? {
                    if key.0 == "metadata" && zone.is_none() {
                        zone = map.next_value::<InnerField<'de>>()?.0;
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(zone)
            }
        }
        Ok(DataCenterZone(
            d.deserialize_any(ScalarOr(Outer))?.flatten(),
        ))
    }
}

/// Runs `V` on an object; any other JSON value is skipped and gives `None`.
struct ScalarOr<V>(V);

macro_rules! skip_scalar {
    ($($name:ident: $ty:ty),*) => {
        $(fn $name<E: de::Error>(self, _: $ty) -> Result<Self::Value, E> { Ok(None) })*
    };
}

impl<'de, V: Visitor<'de>> Visitor<'de> for ScalarOr<V> {
    type Value = Option<V::Value>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.expecting(f)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.0.visit_map(map).map(Some)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        ScalarVisitor.visit_seq(seq).map(|_| None)
    }
    skip_scalar!(visit_str: &str, visit_u64: u64, visit_i64: i64, visit_f64: f64, visit_bool: bool);
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// One instance record, fields as the JSON has them. Filled in place by
/// [`RecordSeed`]: no derive, so a record is never moved while it is read
/// (it is about half a kilobyte), and a scalar field is read without an
/// `Option` layer (`null` reads as [`Scalar::Null`], which every reader of
/// these fields takes as absent). A repeated key keeps its last value, as
/// Jackson does.
#[derive(Debug, Default)]
pub(super) struct RawInstance<'a> {
    pub(super) instance_id: Option<Scalar<'a>>,
    pub(super) host_name: Option<Scalar<'a>>,
    pub(super) app: Option<Scalar<'a>>,
    pub(super) ip_addr: Option<Scalar<'a>>,
    pub(super) status: Option<Scalar<'a>>,
    pub(super) port: Option<Port<'a>>,
    pub(super) secure_port: Option<Port<'a>>,
    pub(super) metadata: Option<Metadata>,
    pub(super) data_center_info: Option<DataCenterZone<'a>>,
    pub(super) vip_address: Option<Scalar<'a>>,
    pub(super) secure_vip_address: Option<Scalar<'a>>,
    pub(super) health_check_url: Option<Scalar<'a>>,
    pub(super) secure_health_check_url: Option<Scalar<'a>>,
    pub(super) action_type: Option<Scalar<'a>>,
}

/// Reads one element of an `instance` list into `slot` (which starts
/// empty); gives `true` for an object, `false` for anything else.
pub(super) struct RecordSeed<'s, 'de> {
    pub(super) slot: &'s mut RawInstance<'de>,
    pub(super) keys: &'s mut Keys,
}

impl<'de> DeserializeSeed<'de> for RecordSeed<'_, 'de> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        Ok(d.deserialize_any(ScalarOr(self))?.is_some())
    }
}

impl<'de> Visitor<'de> for RecordSeed<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an instance record")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let raw = self.slot;
        while let Some(key) = map.next_key::<Text<'de>>()? {
            match key.0.as_ref() {
                "instanceId" => raw.instance_id = Some(map.next_value()?),
                "hostName" => raw.host_name = Some(map.next_value()?),
                "app" => raw.app = Some(map.next_value()?),
                "ipAddr" => raw.ip_addr = Some(map.next_value()?),
                "status" => raw.status = Some(map.next_value()?),
                "port" => raw.port = map.next_value()?,
                "securePort" => raw.secure_port = map.next_value()?,
                "metadata" => {
                    raw.metadata = map.next_value_seed(MetadataSeed {
                        keys: &mut *self.keys,
                    })?;
                }
                "dataCenterInfo" => raw.data_center_info = map.next_value()?,
                "vipAddress" => raw.vip_address = Some(map.next_value()?),
                "secureVipAddress" => raw.secure_vip_address = Some(map.next_value()?),
                "healthCheckUrl" => raw.health_check_url = Some(map.next_value()?),
                "secureHealthCheckUrl" => raw.secure_health_check_url = Some(map.next_value()?),
                "actionType" => raw.action_type = Some(map.next_value()?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}
