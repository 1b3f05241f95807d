//! Fields of a record this build does not know (a newer one wrote them),
//! kept when it writes the record again: spec §8 lets writers add fields
//! old readers ignore, and W13 asks a rewrite to change only what it means
//! to.

/// The fields of a MessagePack map this build does not know, name and
/// value, in their order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UnknownFields(pub Vec<(String, rmpv::Value)>);

// Values are compared as decoded; a NaN would only make a rewrite look
// needed when it is not.
impl Eq for UnknownFields {}

impl UnknownFields {
    /// The entries of the map `payload` whose names are not in `known`.
    pub fn of(payload: &[u8], known: &[&str]) -> UnknownFields {
        match rmpv::decode::read_value(&mut &payload[..]) {
            Ok(rmpv::Value::Map(entries)) => UnknownFields::among(entries, known),
            _ => UnknownFields::default(),
        }
    }

    /// The entries of a decoded map whose names are not in `known`.
    pub fn among(entries: Vec<(rmpv::Value, rmpv::Value)>, known: &[&str]) -> UnknownFields {
        UnknownFields(
            entries
                .into_iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v)))
                .filter(|(k, _)| !known.contains(&k.as_str()))
                .collect(),
        )
    }

    /// Puts these entries after those of a decoded map.
    pub fn push_onto(&self, entries: &mut Vec<(rmpv::Value, rmpv::Value)>) {
        for (k, val) in &self.0 {
            entries.push((rmpv::Value::from(k.as_str()), val.clone()));
        }
    }

    /// The map `encoded` with these entries after its own.
    pub fn appended_to(&self, encoded: Vec<u8>) -> Vec<u8> {
        if self.0.is_empty() {
            return encoded;
        }
        let mut v = rmpv::decode::read_value(&mut &encoded[..]).expect("just encoded");
        if let rmpv::Value::Map(entries) = &mut v {
            self.push_onto(entries);
        }
        let mut out = Vec::with_capacity(encoded.len() * 2);
        rmpv::encode::write_value(&mut out, &v).expect("writing to memory");
        out
    }
}
