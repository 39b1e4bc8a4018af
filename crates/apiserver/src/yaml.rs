//! YAML request bodies, decoded straight into JSON values with a bound on
//! how many nodes aliases may expand to (↔ go-yaml's "excessive aliasing"
//! check after CVE-2019-11253): a body of N aliases to an N-element anchor
//! would otherwise materialize N² values (security review D3). serde_yaml
//! replays an alias's events into the visitor, so counting every value
//! the visitor builds bounds what the decode allocates.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Values a document may hold beyond one per byte of its text.
const ALIAS_ALLOWANCE: usize = 100_000;

/// Decode a YAML document into JSON; map keys that are numbers or booleans
/// become strings, as sigs.k8s.io/yaml converts them.
pub fn to_json(body: &[u8]) -> Result<Value, String> {
    let budget = Cell::new(body.len().saturating_add(ALIAS_ALLOWANCE));
    let de = serde_yaml::Deserializer::from_slice(body);
    Node { budget: &budget }
        .deserialize(de)
        .map_err(|e| format!("error decoding YAML: {e}"))
}

#[derive(Clone, Copy)]
struct Node<'a> {
    budget: &'a Cell<usize>,
}

impl Node<'_> {
    fn take<E: de::Error>(&self) -> Result<(), E> {
        match self.budget.get().checked_sub(1) {
            Some(left) => {
                self.budget.set(left);
                Ok(())
            }
            None => Err(E::custom("yaml: document contains excessive aliasing")),
        }
    }
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.take()?;
        Ok(Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }
    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Value, E> {
        self.take()?;
        Ok(Value::Bool(b))
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Value, E> {
        self.take()?;
        Ok(Value::Number(n.into()))
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Value, E> {
        self.take()?;
        Ok(Value::Number(n.into()))
    }
    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Value, E> {
        self.take()?;
        Number::from_f64(n)
            .map(Value::Number)
            .ok_or_else(|| E::custom(format!("{n} cannot be represented in JSON")))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Value, E> {
        self.take()?;
        Ok(Value::String(s.to_string()))
    }
    fn visit_string<E: de::Error>(self, s: String) -> Result<Value, E> {
        self.take()?;
        Ok(Value::String(s))
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.take()?;
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(self)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.take()?;
        let mut out = Map::new();
        while let Some(key) = map.next_key_seed(self)? {
            let key = match key {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                Value::Null => "null".to_string(),
                other => {
                    return Err(de::Error::custom(format!("invalid map key: {other}")));
                }
            };
            let value = map.next_value_seed(self)?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_yaml_as_json() {
        let v = to_json(b"a: 1\nb: [true, null, x]\n1: one\nc: &x {d: 2}\ne: *x\n").unwrap();
        assert_eq!(
            v,
            serde_json::json!({"a": 1, "b": [true, null, "x"], "1": "one", "c": {"d": 2}, "e": {"d": 2}})
        );
    }

    #[test]
    fn refuses_quadratic_alias_expansion() {
        // Security review D3: N aliases of an N-element anchor.
        let n = 2_000;
        let mut doc = String::from("a: &a [");
        doc.push_str(&vec!["1"; n].join(","));
        doc.push_str("]\nb: [");
        doc.push_str(&vec!["*a"; n].join(","));
        doc.push_str("]\n");
        let err = to_json(doc.as_bytes()).unwrap_err();
        assert!(err.contains("excessive aliasing"), "{err}");
        // A few aliases are fine.
        let small = "a: &a [1, 2, 3]\nb: [*a, *a]\n";
        assert_eq!(to_json(small.as_bytes()).unwrap()["b"][1][2], 3);
    }
}
