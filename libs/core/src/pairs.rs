//! A map whose keys are not strings (a tenant and an agent, say), written as a list of
//! `[key, value]` pairs, sorted by key: JSON objects take only string keys, and a sorted list
//! is the same bytes for the same map. For `#[serde(with = "cc_core::pairs")]`.

use std::collections::HashMap;
use std::hash::Hash;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub fn serialize<K, V, S>(map: &HashMap<K, V>, s: S) -> Result<S::Ok, S::Error>
where
    K: Serialize + Ord,
    V: Serialize,
    S: Serializer,
{
    let mut pairs: Vec<(&K, &V)> = map.iter().collect();
    pairs.sort_by(|a, b| a.0.cmp(b.0));
    s.collect_seq(pairs)
}

pub fn deserialize<'de, K, V, D>(d: D) -> Result<HashMap<K, V>, D::Error>
where
    K: Deserialize<'de> + Eq + Hash,
    V: Deserialize<'de>,
    D: Deserializer<'de>,
{
    let pairs = Vec::<(K, V)>::deserialize(d)?;
    let n = pairs.len();
    let map: HashMap<K, V> = pairs.into_iter().collect();
    if map.len() != n {
        return Err(serde::de::Error::custom("a key is listed twice"));
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct M(#[serde(with = "super")] HashMap<(String, u32), i64>);

    #[test]
    fn a_map_with_tuple_keys_round_trips_as_sorted_pairs_and_a_repeated_key_is_refused() {
        let m = M(HashMap::from([
            (("b".to_string(), 1), 10),
            (("a".to_string(), 2), 20),
        ]));
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, r#"[[["a",2],20],[["b",1],10]]"#);
        assert_eq!(serde_json::from_str::<M>(&json).unwrap(), m);
        let twice = r#"[[["a",2],20],[["a",2],10]]"#;
        let e = serde_json::from_str::<M>(twice).unwrap_err();
        assert!(e.to_string().contains("listed twice"), "{e}");
    }
}
