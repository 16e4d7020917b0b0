//! Each kernel against a straightforward per-row model: attributes as one `Vec<(key, value)>`
//! per parent, changed the way the Collector changes a `pcommon.Map`.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, BooleanArray, BooleanBuilder, DictionaryArray,
    Float64Builder, Int64Builder, RecordBatch, StringArray, StringBuilder, UInt8Builder,
    UInt32Array,
};
use proptest::prelude::*;
use regex::Regex;

use super::*;
use crate::schema::{AnyValueType, Table};

#[derive(Clone, Debug, PartialEq)]
enum V {
    Str(String),
    Int(i64),
    /// bit pattern, so NaN compares equal to itself
    Double(u64),
    Bool(bool),
    Bytes(Vec<u8>),
    Map(Vec<u8>),
    Empty,
    Absent,
}

type Model = Vec<Vec<(String, V)>>;

/// Dictionary values: duplicates and an unused entry on purpose, so kernels must judge keys by
/// value and not by dictionary index.
/// It lacks "new", so inserting that key must extend the dictionary.
const DICT: [&str; 8] = ["d", "a", "b", "c", "a", "e", "unused", "c"];
const KEYS: [&str; 5] = ["a", "b", "c", "d", "e"];

fn build(model: &Model) -> RecordBatch {
    let mut parent = Vec::new();
    let mut key_idx = Vec::new();
    let mut ty = UInt8Builder::new();
    let mut s = StringBuilder::new();
    let mut i = Int64Builder::new();
    let mut d = Float64Builder::new();
    let mut b = BooleanBuilder::new();
    let mut by = BinaryBuilder::new();
    let mut n = 0usize;
    for (p, attrs) in model.iter().enumerate() {
        for (k, v) in attrs {
            parent.push(p as u32);
            // alternate between duplicate dictionary entries of the same key
            let choices: Vec<usize> = (0..DICT.len()).filter(|&j| DICT[j] == k).collect();
            key_idx.push(choices[n % choices.len()] as u32);
            n += 1;
            let t = match v {
                V::Str(_) => AnyValueType::Str,
                V::Int(_) => AnyValueType::Int,
                V::Double(_) => AnyValueType::Double,
                V::Bool(_) => AnyValueType::Bool,
                V::Bytes(_) => AnyValueType::Bytes,
                V::Map(_) => AnyValueType::Map,
                V::Empty => AnyValueType::Empty,
                V::Absent => AnyValueType::Absent,
            };
            ty.append_value(t as u8);
            s.append_option(match v {
                V::Str(x) => Some(x.as_str()),
                _ => None,
            });
            i.append_option(match v {
                V::Int(x) => Some(*x),
                _ => None,
            });
            d.append_option(match v {
                V::Double(x) => Some(f64::from_bits(*x)),
                _ => None,
            });
            b.append_option(match v {
                V::Bool(x) => Some(*x),
                _ => None,
            });
            by.append_option(match v {
                V::Bytes(x) | V::Map(x) => Some(x.as_slice()),
                _ => None,
            });
        }
    }
    let keys = DictionaryArray::<UInt32Type>::new(
        UInt32Array::from(key_idx),
        Arc::new(StringArray::from(DICT.to_vec())),
    );
    let cols: Vec<ArrayRef> = vec![
        Arc::new(UInt32Array::from(parent)),
        Arc::new(keys),
        Arc::new(ty.finish()),
        Arc::new(s.finish()),
        Arc::new(i.finish()),
        Arc::new(d.finish()),
        Arc::new(b.finish()),
        Arc::new(by.finish()),
    ];
    RecordBatch::try_new(Table::SpanAttrs.schema(), cols).unwrap()
}

fn value_at(v: &AnyValues, r: usize) -> Option<V> {
    Some(match v.value_type(r)? {
        AnyValueType::Str => V::Str(v.str.value(r).to_string()),
        AnyValueType::Int => V::Int(v.int.value(r)),
        AnyValueType::Double => V::Double(v.double.value(r).to_bits()),
        AnyValueType::Bool => V::Bool(v.bool.value(r)),
        AnyValueType::Bytes => V::Bytes(v.bytes.value(r).to_vec()),
        AnyValueType::Map => V::Map(v.bytes.value(r).to_vec()),
        AnyValueType::Array => unreachable!("not generated"),
        AnyValueType::Empty => V::Empty,
        AnyValueType::Absent => V::Absent,
    })
}

/// Reads a table back into the model, checking the schema, the sort invariant, that every
/// column is a valid Arrow array, and that exactly the value column `type` names is non-null
/// on each row (the layout the decoder produces and the rebuild kernels rely on).
fn read(batch: &RecordBatch, num_parents: usize) -> Model {
    assert_eq!(batch.schema(), Table::SpanAttrs.schema());
    let ids = parent_ids(batch);
    assert!(ids.windows(2).all(|w| w[0] <= w[1]), "not sorted: {ids:?}");
    for c in batch.columns() {
        c.to_data().validate_full().expect("valid array");
    }
    let ty = types(batch);
    assert_eq!(ty.null_count(), 0, "type is not nullable");
    for r in 0..batch.num_rows() {
        let t = AnyValueType::from_u8(ty.value(r)).expect("a known type");
        let want: [bool; 5] = [
            t == AnyValueType::Str,
            t == AnyValueType::Int,
            t == AnyValueType::Double,
            t == AnyValueType::Bool,
            matches!(
                t,
                AnyValueType::Bytes | AnyValueType::Array | AnyValueType::Map
            ),
        ];
        let got: Vec<bool> = (3..8).map(|c| batch.column(c).is_valid(r)).collect();
        assert_eq!(
            got, want,
            "row {r} of type {t:?}: validity of str, int, double, bool, bytes"
        );
    }
    let keys = keys(batch);
    let dict = keys.values().as_string::<i32>();
    let vals = AnyValues::of_rows(batch);
    let mut m: Model = vec![Vec::new(); num_parents];
    for r in 0..batch.num_rows() {
        let k = dict.value(keys.keys().value(r) as usize).to_string();
        m[ids[r] as usize].push((k, value_at(&vals, r).expect("every row has a type")));
    }
    m
}

fn arb_value() -> impl Strategy<Value = V> {
    prop_oneof![
        3 => prop::sample::select(vec!["x", "", "foo/bar", "héllo", "42", "-7", "1.5e3", "abc"])
            .prop_map(|s| V::Str(s.to_string())),
        2 => prop_oneof![any::<i64>(), -5i64..5].prop_map(V::Int),
        2 => prop_oneof![any::<f64>(), -10.0f64..10.0, Just(1e21), Just(1e-7)]
            .prop_map(|f| V::Double(f.to_bits())),
        1 => any::<bool>().prop_map(V::Bool),
        1 => prop::collection::vec(any::<u8>(), 0..4).prop_map(V::Bytes),
        1 => Just(V::Empty),
        1 => Just(V::Absent),
    ]
}

/// 0..6 parents, each with 0..6 attributes of distinct keys.
fn arb_model() -> impl Strategy<Value = Model> {
    prop::collection::vec(
        prop::collection::vec((prop::sample::select(KEYS.to_vec()), arb_value()), 0..6).prop_map(
            |kvs| {
                let mut seen = Vec::new();
                kvs.into_iter()
                    .filter(|(k, _)| {
                        let new = !seen.contains(k);
                        seen.push(*k);
                        new
                    })
                    .map(|(k, v)| (k.to_string(), v))
                    .collect::<Vec<_>>()
            },
        ),
        0..6,
    )
}

/// A model and a parent mask for it (`None` = all parents; nulls in the mask mean "no").
fn arb_model_and_mask() -> impl Strategy<Value = (Model, Option<Vec<Option<bool>>>)> {
    arb_model().prop_flat_map(|m| {
        let n = m.len();
        (
            Just(m),
            prop::option::of(prop::collection::vec(prop::option::of(any::<bool>()), n)),
        )
    })
}

fn mask_array(mask: &Option<Vec<Option<bool>>>) -> Option<BooleanArray> {
    mask.as_ref().map(|m| BooleanArray::from(m.clone()))
}

fn selected(mask: &Option<Vec<Option<bool>>>, p: usize) -> bool {
    mask.as_ref().is_none_or(|m| m[p] == Some(true))
}

fn arb_key_set() -> impl Strategy<Value = Vec<&'static str>> {
    prop::sample::subsequence(KEYS.to_vec(), 0..=KEYS.len())
}

fn scalar_values(v: &V) -> Option<AnyValues> {
    Some(AnyValues::scalar(&match v {
        V::Str(s) => Scalar::Str(s.clone()),
        V::Int(i) => Scalar::Int(*i),
        V::Double(d) => Scalar::Double(f64::from_bits(*d)),
        V::Bool(b) => Scalar::Bool(*b),
        V::Bytes(b) => Scalar::Bytes(b.clone()),
        _ => return None,
    }))
}

fn hash_model(v: &V) -> V {
    use sha2::{Digest, Sha256};
    let bytes: Option<Vec<u8>> = match v {
        V::Str(s) => Some(s.as_bytes().to_vec()),
        V::Bool(b) => Some(vec![u8::from(*b)]),
        V::Int(i) => Some(i.to_le_bytes().to_vec()),
        V::Double(d) => Some(d.to_le_bytes().to_vec()),
        _ => None,
    };
    V::Str(
        bytes
            .map(|b| hex::encode(Sha256::digest(&b)))
            .unwrap_or_default(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn delete_keys_matches_model((m, mask) in arb_model_and_mask(), del in arb_key_set()) {
        let out = delete_keys(&build(&m), &KeySet::new(del.clone()), mask_array(&mask).as_ref()).unwrap();
        let want: Model = m.iter().enumerate().map(|(p, a)| {
            a.iter().filter(|(k, _)| !(selected(&mask, p) && del.contains(&k.as_str()))).cloned().collect()
        }).collect();
        prop_assert_eq!(read(&out, m.len()), want);
    }

    /// Deleting from a pending table (the rows of some kept parents, renumbered, as a filter
    /// leaves it), twice, then building it: the model's kept parents with the keys deleted.
    #[test]
    fn delete_pending_matches_model(
        m in arb_model(),
        kept_parents in prop::collection::vec(any::<bool>(), 6),
        first in arb_key_set(),
        second in arb_key_set(),
        select_mask in prop::collection::vec(prop::option::of(any::<bool>()), 6),
    ) {
        let keep = |p: usize| kept_parents[p % 6];
        let table = build(&m);
        let ids = parent_ids(&table).to_vec();
        let row_kept: Vec<bool> = ids.iter().map(|&p| keep(p as usize)).collect();
        let mut next = 0u32;
        let new_ids: Vec<u32> = (0..m.len()).map(|p| { let id = next; next += u32::from(keep(p)); id }).collect();
        let kept: Model = m.iter().enumerate().filter(|(p, _)| keep(*p)).map(|(_, a)| a.clone()).collect();
        let rows = PendingRows::new(
            Table::SpanAttrs,
            table,
            crate::kernels::ranges::runs_of_bools(&row_kept),
            Some(Arc::new(new_ids)),
        ).unwrap();
        let mask: Option<Vec<Option<bool>>> = Some(select_mask[..kept.len()].to_vec());
        let once = delete_pending(&rows, |k| first.contains(&k), None).unwrap();
        let twice = delete_pending(&once, |k| second.contains(&k), mask_array(&mask).as_ref()).unwrap();
        let want: Model = kept.iter().enumerate().map(|(p, a)| {
            a.iter()
                .filter(|(k, _)| !first.contains(&k.as_str()))
                .filter(|(k, _)| !(selected(&mask, p) && second.contains(&k.as_str())))
                .cloned()
                .collect()
        }).collect();
        prop_assert_eq!(twice.num_rows(), want.iter().map(Vec::len).sum::<usize>());
        prop_assert_eq!(read(twice.build(), kept.len()), want);
    }

    /// `set_key` and `first_rows_of_keys` on pending rows (some parents' rows, renumbered,
    /// some keys deleted) give what they give on the built table: the same table, and the
    /// same rows (base rows, read through the runs).
    #[test]
    fn set_key_and_lookups_on_pending_rows_equal_the_built_table(
        m in arb_model(),
        kept_parents in prop::collection::vec(any::<bool>(), 6),
        deleted in arb_key_set(),
        key in prop::sample::select(vec!["a", "b", "new"]),
        values in prop::collection::vec(prop::option::of(any::<i64>()), 6),
        select_mask in prop::option::of(prop::collection::vec(prop::option::of(any::<bool>()), 6)),
        mode in prop::sample::select(vec![SetMode::Insert, SetMode::Update, SetMode::Upsert]),
    ) {
        let keep = |p: usize| kept_parents[p % 6];
        let table = build(&m);
        let row_kept: Vec<bool> = parent_ids(&table).iter().map(|&p| keep(p as usize)).collect();
        let mut next = 0u32;
        let new_ids: Vec<u32> = (0..m.len()).map(|p| { let id = next; next += u32::from(keep(p)); id }).collect();
        let parents = next as usize;
        let filtered = PendingRows::new(
            Table::SpanAttrs,
            table,
            crate::kernels::ranges::runs_of_bools(&row_kept),
            Some(Arc::new(new_ids)),
        ).unwrap();
        let rows = delete_pending(&filtered, |k| deleted.contains(&k), None).unwrap();
        // Built on its own, from the same pending description.
        let built = rows.narrowed(rows.runs().to_vec()).build().clone();

        let keys: Vec<String> = ["a", "b", "c", "d", "e", "new"].iter().map(|k| k.to_string()).collect();
        let base_rows = first_rows_of_keys_pending(&rows, parents, &keys);
        let built_rows = first_rows_of_keys(&built, parents, &keys);
        // Base row -> row of the built table.
        let mut at_built = vec![u32::MAX; rows.base().num_rows()];
        let mut i = 0u32;
        for r in rows.runs() {
            for slot in &mut at_built[r.start..r.start + r.len] {
                *slot = i;
                i += 1;
            }
        }
        let mapped: Vec<Vec<u32>> = base_rows
            .iter()
            .map(|v| v.iter().map(|&b| if b == u32::MAX { b } else { at_built[b as usize] }).collect())
            .collect();
        prop_assert_eq!(mapped, built_rows);

        let src = AnyValues::from_ints(Int64Array::from(values[..parents].to_vec()));
        let mask = select_mask.map(|m| m[..parents].to_vec());
        let fused = set_key_pending(&rows, parents, mask_array(&mask).as_ref(), key, Values::PerParent(&src), mode).unwrap();
        let plain = set_key(&built, parents, mask_array(&mask).as_ref(), key, Values::PerParent(&src), mode).unwrap();
        prop_assert_eq!(read(&fused, parents), read(&plain, parents));
        fused.columns().iter().for_each(|c| c.to_data().validate_full().expect("valid"));
    }

    #[test]
    fn delete_matching_keys_matches_model(
        (m, mask) in arb_model_and_mask(),
        pattern in prop::sample::select(vec!["^[ab]", "c|d", "^e$", "z", ""]),
    ) {
        let re = Regex::new(pattern).unwrap();
        let out = delete_matching_keys(&build(&m), &re, mask_array(&mask).as_ref()).unwrap();
        let want: Model = m.iter().enumerate().map(|(p, a)| {
            a.iter().filter(|(k, _)| !(selected(&mask, p) && re.is_match(k))).cloned().collect()
        }).collect();
        prop_assert_eq!(read(&out, m.len()), want);
    }

    #[test]
    fn keep_keys_matches_model((m, mask) in arb_model_and_mask(), keep in arb_key_set()) {
        let out = keep_keys(&build(&m), &KeySet::new(keep.clone()), mask_array(&mask).as_ref()).unwrap();
        let want: Model = m.iter().enumerate().map(|(p, a)| {
            a.iter().filter(|(k, _)| !selected(&mask, p) || keep.contains(&k.as_str())).cloned().collect()
        }).collect();
        prop_assert_eq!(read(&out, m.len()), want);
    }

    #[test]
    fn limit_keys_matches_model(
        (m, mask) in arb_model_and_mask(),
        limit in 0usize..5,
        prio in arb_key_set(),
    ) {
        let out = limit_keys(&build(&m), limit, &KeySet::new(prio.clone()), mask_array(&mask).as_ref()).unwrap();
        // The OTTL `limit` algorithm: count the priority keys present, then keep non-priority
        // keys in order while the count is below the limit.
        let want: Model = m.iter().enumerate().map(|(p, a)| {
            if !selected(&mask, p) {
                return a.clone();
            }
            let mut prio_kept = 0;
            let prio_keep: Vec<bool> = a.iter().map(|(k, _)| {
                let keep = prio.contains(&k.as_str()) && prio_kept < limit;
                prio_kept += usize::from(keep);
                keep
            }).collect();
            let mut count = prio_kept;
            a.iter().zip(prio_keep).filter(|((k, _), pk)| {
                if prio.contains(&k.as_str()) {
                    return *pk;
                }
                let keep = count < limit;
                count += usize::from(keep);
                keep
            }).map(|(kv, _)| kv.clone()).collect()
        }).collect();
        prop_assert_eq!(read(&out, m.len()), want);
    }

    #[test]
    fn set_key_scalar_matches_model(
        (m, mask) in arb_model_and_mask(),
        key in prop::sample::select(vec!["a", "c", "new"]),
        value in arb_value(),
        mode in prop::sample::select(vec![SetMode::Insert, SetMode::Update, SetMode::Upsert]),
    ) {
        let Some(src) = scalar_values(&value) else { return Ok(()) };
        let out = set_key(&build(&m), m.len(), mask_array(&mask).as_ref(), key, Values::Scalar(&src), mode).unwrap();
        let want = set_model(&m, &mask, key, |_| Some(value.clone()), mode);
        prop_assert_eq!(read(&out, m.len()), want);
    }

    #[test]
    fn set_key_from_other_attribute_matches_model(
        (m, mask) in arb_model_and_mask(),
        key in prop::sample::select(vec!["a", "c", "new"]),
        from in prop::sample::select(vec!["b", "c", "d"]),
        mode in prop::sample::select(vec![SetMode::Insert, SetMode::Update, SetMode::Upsert]),
    ) {
        let batch = build(&m);
        let src = lookup(&batch, m.len(), from).unwrap();
        let out = set_key(&batch, m.len(), mask_array(&mask).as_ref(), key, Values::PerParent(&src), mode).unwrap();
        let want = set_model(&m, &mask, key, |p| {
            m[p].iter().find(|(k, _)| k == from).map(|(_, v)| v.clone())
        }, mode);
        prop_assert_eq!(read(&out, m.len()), want);
    }

    #[test]
    fn set_key_per_parent_column_matches_model(
        (m, mask) in arb_model_and_mask(),
        ints in prop::collection::vec(prop::option::of(any::<i64>()), 6),
        mode in prop::sample::select(vec![SetMode::Insert, SetMode::Update, SetMode::Upsert]),
    ) {
        let col = Int64Array::from(ints[..m.len()].to_vec());
        let src = AnyValues::from_ints(col);
        let out = set_key(&build(&m), m.len(), mask_array(&mask).as_ref(), "b", Values::PerParent(&src), mode).unwrap();
        let want = set_model(&m, &mask, "b", |p| ints[p].map(V::Int), mode);
        prop_assert_eq!(read(&out, m.len()), want);
    }

    /// Several keys in one rebuild give what setting them one after the other gives: scalar
    /// and per-parent values, keys present, absent or new to the dictionary, a key given
    /// twice, every mode, with and without a parent mask.
    #[test]
    fn set_keys_match_setting_keys_in_turn(
        (m, mask) in arb_model_and_mask(),
        sets in prop::collection::vec(
            (
                prop::sample::select(vec!["a", "c", "e", "new", "new2"]),
                prop_oneof![
                    arb_value().prop_map(Ok),
                    prop::collection::vec(prop::option::of(-3i64..3), 6).prop_map(Err),
                ],
            ),
            0..5,
        ),
        mode in prop::sample::select(vec![SetMode::Insert, SetMode::Update, SetMode::Upsert]),
    ) {
        let n = m.len();
        // Ok(v): a scalar (skipped if it has no scalar form); Err(ints): one per parent.
        let columns: Vec<(&str, AnyValues)> = sets
            .iter()
            .filter_map(|(k, v)| match v {
                Ok(v) => scalar_values(v).map(|a| (*k, a)),
                Err(ints) => Some((*k, AnyValues::from_ints(Int64Array::from(ints[..n].to_vec())))),
            })
            .collect();
        let per_parent: Vec<bool> = sets
            .iter()
            .filter(|(_, v)| v.as_ref().map_or(true, |v| scalar_values(v).is_some()))
            .map(|(_, v)| v.is_err())
            .collect();
        let values: Vec<(&str, Values<'_>)> = columns
            .iter()
            .zip(&per_parent)
            .map(|((k, a), pp)| (*k, if *pp { Values::PerParent(a) } else { Values::Scalar(a) }))
            .collect();
        let batch = build(&m);
        let out = set_keys(&batch, n, mask_array(&mask).as_ref(), &values, mode).unwrap();
        let mut want = m.clone();
        let mut one_by_one = batch.clone();
        for (((key, a), pp), (_, v)) in columns.iter().zip(&per_parent).zip(&values) {
            want = set_model(&want, &mask, key, |p| {
                if *pp { value_at(a, p) } else { value_at(a, 0) }
            }, mode);
            one_by_one = set_key(&one_by_one, n, mask_array(&mask).as_ref(), key, *v, mode).unwrap();
        }
        prop_assert_eq!(read(&out, n), want);
        prop_assert_eq!(read(&one_by_one, n), read(&out, n));
    }

    #[test]
    fn first_rows_of_keys_match_model(m in arb_model(), keys in arb_key_set(), extra_parents in 0usize..2) {
        let mut keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        keys.push("absent".into());
        // A duplicate key on a parent: the first row holding it is the one found.
        let mut m = m;
        if let Some(a) = m.iter_mut().find(|a| !a.is_empty()) {
            let first = a[0].clone();
            a.push((first.0, V::Int(7)));
        }
        let batch = build(&m);
        let got = first_rows_of_keys(&batch, m.len() + extra_parents, &keys);
        let mut row = 0u32;
        let mut want = vec![vec![u32::MAX; m.len() + extra_parents]; keys.len()];
        for (p, a) in m.iter().enumerate() {
            for (k, _) in a {
                if let Some(slot) = keys.iter().position(|x| x == k)
                    && want[slot][p] == u32::MAX
                {
                    want[slot][p] = row;
                }
                row += 1;
            }
        }
        prop_assert_eq!(got, want);
    }

    #[test]
    fn lookup_matches_model(m in arb_model(), key in prop::sample::select(KEYS.to_vec())) {
        let got = lookup(&build(&m), m.len(), key).unwrap();
        prop_assert_eq!(got.len(), m.len());
        for (p, a) in m.iter().enumerate() {
            let want = a.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
            prop_assert_eq!(value_at(&got, p), want);
        }
    }

    #[test]
    fn hash_rows_matches_model(m in arb_model(), keys_to_hash in arb_key_set()) {
        let batch = build(&m);
        let rows = key_mask(&batch, |k| keys_to_hash.contains(&k));
        let out = hash_rows(&batch, &rows).unwrap();
        let want: Model = m.iter().map(|a| a.iter().map(|(k, v)| {
            (k.clone(), if keys_to_hash.contains(&k.as_str()) { hash_model(v) } else { v.clone() })
        }).collect()).collect();
        prop_assert_eq!(read(&out, m.len()), want);
    }

    #[test]
    fn convert_rows_matches_model(
        m in arb_model(),
        key in prop::sample::select(KEYS.to_vec()),
        target in prop::sample::select(vec![ConvertTarget::String, ConvertTarget::Int, ConvertTarget::Double]),
    ) {
        let batch = build(&m);
        let rows = key_mask(&batch, |k| k == key);
        let out = convert_rows(&batch, &rows, target).unwrap();
        let want: Model = m.iter().map(|a| a.iter().map(|(k, v)| {
            (k.clone(), if k == key { convert_model(v, target) } else { v.clone() })
        }).collect()).collect();
        prop_assert_eq!(read(&out, m.len()), want);
    }

    #[test]
    fn extract_matches_model(m in arb_model(), key in prop::sample::select(KEYS.to_vec())) {
        let re = Regex::new(r"^(?P<first>[a-z]+)(?:/(?P<second>[a-z]+))?").unwrap();
        let got = extract(&build(&m), m.len(), key, &re).unwrap();
        prop_assert_eq!(got.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), vec!["first", "second"]);
        for (p, a) in m.iter().enumerate() {
            let caps = a.iter().find(|(k, _)| k == key).and_then(|(_, v)| match v {
                V::Str(s) => re.captures(s),
                _ => None,
            });
            for (g, (name, col)) in got.iter().enumerate() {
                let want = caps.as_ref().map(|c| c.name(name).map_or("", |x| x.as_str()));
                let have = col.is_valid(p).then(|| col.value(p));
                prop_assert_eq!(have, want, "parent {} group {}", p, g);
            }
        }
    }
}

fn set_model(
    m: &Model,
    mask: &Option<Vec<Option<bool>>>,
    key: &str,
    value_of: impl Fn(usize) -> Option<V>,
    mode: SetMode,
) -> Model {
    m.iter()
        .enumerate()
        .map(|(p, a)| {
            let mut a = a.clone();
            let Some(v) = value_of(p).filter(|_| selected(mask, p)) else {
                return a;
            };
            match a.iter_mut().find(|(k, _)| k == key) {
                Some(slot) if mode != SetMode::Insert => slot.1 = v,
                Some(_) => {}
                None if mode != SetMode::Update => a.push((key.to_string(), v)),
                None => {}
            }
            a
        })
        .collect()
}

fn convert_model(v: &V, target: ConvertTarget) -> V {
    match (target, v) {
        (ConvertTarget::String, V::Str(_)) => v.clone(),
        (ConvertTarget::String, V::Int(i)) => V::Str(i.to_string()),
        (ConvertTarget::String, V::Double(d)) => {
            let mut s = String::new();
            go_json_float(f64::from_bits(*d), &mut s);
            V::Str(s)
        }
        (ConvertTarget::String, V::Bool(b)) => V::Str(b.to_string()),
        (ConvertTarget::String, V::Bytes(b)) => {
            use base64::Engine as _;
            V::Str(base64::engine::general_purpose::STANDARD.encode(b))
        }
        (ConvertTarget::String, V::Empty | V::Absent) => V::Str(String::new()),
        (ConvertTarget::Int, V::Double(d)) => V::Int(f64::from_bits(*d) as i64),
        (ConvertTarget::Int, V::Bool(b)) => V::Int(i64::from(*b)),
        (ConvertTarget::Int, V::Str(s)) => s.parse::<i64>().map_or(v.clone(), V::Int),
        (ConvertTarget::Double, V::Int(i)) => V::Double((*i as f64).to_bits()),
        (ConvertTarget::Double, V::Bool(b)) => V::Double(if *b { 1.0f64 } else { 0.0 }.to_bits()),
        (ConvertTarget::Double, V::Str(s)) => s
            .parse::<f64>()
            .map_or(v.clone(), |f| V::Double(f.to_bits())),
        _ => v.clone(),
    }
}

// ---------------------------------------------------------------------------------------------
// Fixed cases: known digests and the Collector's documented conversions
// ---------------------------------------------------------------------------------------------

fn one_parent(kvs: Vec<(&str, V)>) -> Model {
    vec![kvs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()]
}

#[test]
fn hash_is_sha256_hex_as_the_collector_writes_it() {
    let m = one_parent(vec![
        ("a", V::Str("abc".into())),
        ("b", V::Bool(true)),
        ("c", V::Int(1)),
        ("d", V::Bytes(vec![1, 2])),
    ]);
    let batch = build(&m);
    let out = hash_rows(&batch, &BooleanArray::from(vec![true; 4])).unwrap();
    let got = read(&out, 1);
    // sha256("abc"), sha256([1]), sha256(1i64 little-endian); bytes hash to "" in the Collector.
    assert_eq!(
        got[0][0].1,
        V::Str("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into())
    );
    assert_eq!(
        got[0][1].1,
        V::Str("4bf5122f344554c53bde2ebb8cd2b7e3d1600ad631c385a5d7cce23c7785459a".into())
    );
    assert_eq!(
        got[0][2].1,
        V::Str("7c9fa136d4413fa6173637e883b6998d32e1d675f88cddff9dcbcf331820f4b8".into())
    );
    assert_eq!(got[0][3].1, V::Str(String::new()));
}

#[test]
fn doubles_print_as_go_json_numbers() {
    let cases = [
        (1.0, "1"),
        (1.5, "1.5"),
        (-0.0, "-0"),
        (1e20, "100000000000000000000"),
        (1e21, "1e+21"),
        (1.5e-7, "1.5e-7"),
        (0.000001, "0.000001"),
        (123456.789, "123456.789"),
        (f64::INFINITY, "json: unsupported value: +Inf"),
    ];
    for (f, want) in cases {
        let mut s = String::new();
        go_json_float(f, &mut s);
        assert_eq!(s, want, "{f}");
    }
}

#[test]
fn convert_parses_like_go_strconv() {
    assert_eq!(parse_go_int("42"), Some(42));
    assert_eq!(parse_go_int("+42"), Some(42));
    assert_eq!(parse_go_int("-9223372036854775808"), Some(i64::MIN));
    assert_eq!(parse_go_int("9223372036854775808"), None);
    assert_eq!(parse_go_int(" 42"), None);
    assert_eq!(parse_go_int("4_2"), None);
    assert_eq!(parse_go_int("1.0"), None);
    assert_eq!(parse_go_float("1.5e3"), Some(1500.0));
    assert_eq!(parse_go_float("-Inf"), Some(f64::NEG_INFINITY));
    assert!(parse_go_float("NaN").is_some_and(f64::is_nan));
    assert_eq!(parse_go_float("1,5"), None);
    assert_eq!(parse_go_float("abc"), None);
}

#[test]
fn maps_and_arrays_convert_to_go_json() {
    use opentelemetry_proto::tonic::common::v1::{
        AnyValue, ArrayValue, KeyValue, KeyValueList, any_value::Value as Av,
    };
    let s = |x: &str| AnyValue {
        value: Some(Av::StringValue(x.into())),
    };
    let map = AnyValue {
        value: Some(Av::KvlistValue(KeyValueList {
            values: vec![
                KeyValue {
                    key: "z".into(),
                    value: Some(s("<b>")),
                    key_strindex: 0,
                },
                KeyValue {
                    key: "a".into(),
                    value: Some(AnyValue {
                        value: Some(Av::ArrayValue(ArrayValue {
                            values: vec![
                                AnyValue {
                                    value: Some(Av::IntValue(1)),
                                },
                                AnyValue {
                                    value: Some(Av::DoubleValue(2.5)),
                                },
                                AnyValue { value: None },
                            ],
                        })),
                    }),
                    key_strindex: 0,
                },
            ],
        })),
    };
    let m = one_parent(vec![("a", V::Map(map.encode_to_vec()))]);
    let out = convert_rows(
        &build(&m),
        &BooleanArray::from(vec![true]),
        ConvertTarget::String,
    )
    .unwrap();
    assert_eq!(
        read(&out, 1)[0][0].1,
        V::Str(r#"{"a":[1,2.5,null],"z":"\u003cb\u003e"}"#.into())
    );
}

#[test]
fn set_key_extends_the_dictionary_and_keeps_other_rows() {
    let m = vec![
        vec![("a".to_string(), V::Int(1))],
        vec![],
        vec![("b".to_string(), V::Str("x".into()))],
    ];
    let batch = build(&m);
    let v = AnyValues::scalar(&Scalar::Str("new value".into()));
    let out = set_key(
        &batch,
        3,
        Some(&BooleanArray::from(vec![true, true, false])),
        "brand.new",
        Values::Scalar(&v),
        SetMode::Upsert,
    )
    .unwrap();
    assert_eq!(
        read(&out, 3),
        vec![
            vec![
                ("a".to_string(), V::Int(1)),
                ("brand.new".to_string(), V::Str("new value".into()))
            ],
            vec![("brand.new".to_string(), V::Str("new value".into()))],
            vec![("b".to_string(), V::Str("x".into()))],
        ]
    );
    // Nothing selected, nothing to do: the same buffers come back.
    let same = set_key(
        &batch,
        3,
        Some(&BooleanArray::from(vec![false, false, false])),
        "a",
        Values::Scalar(&v),
        SetMode::Upsert,
    )
    .unwrap();
    assert!(same.column(3).to_data().ptr_eq(&batch.column(3).to_data()) || same == batch);
}

#[test]
fn bad_shapes_are_errors_not_panics() {
    let m = vec![vec![("a".to_string(), V::Int(1))]; 3];
    let batch = build(&m);
    let v = AnyValues::scalar(&Scalar::Int(1));
    assert!(matches!(
        set_key(&batch, 2, None, "a", Values::Scalar(&v), SetMode::Upsert),
        Err(KernelError::ParentOutOfRange { .. })
    ));
    assert!(matches!(
        set_key(&batch, 3, None, "a", Values::PerParent(&v), SetMode::Upsert),
        Err(KernelError::Length { .. })
    ));
    assert!(matches!(
        delete_keys(
            &batch,
            &KeySet::new(["a"]),
            Some(&BooleanArray::from(vec![true]))
        ),
        Err(KernelError::ParentOutOfRange { .. })
    ));
    assert!(matches!(
        hash_rows(&batch, &BooleanArray::from(vec![true])),
        Err(KernelError::Length { .. })
    ));
    assert!(lookup(&batch, 1, "a").is_err());
}

#[test]
fn duplicate_keys_lookup_reads_the_first_and_set_updates_all() {
    let m = one_parent(vec![("a", V::Int(1)), ("b", V::Int(2)), ("a", V::Int(3))]);
    let batch = build(&m);
    let got = lookup(&batch, 1, "a").unwrap();
    assert_eq!(value_at(&got, 0), Some(V::Int(1)));
    let v = AnyValues::scalar(&Scalar::Int(9));
    let out = set_key(&batch, 1, None, "a", Values::Scalar(&v), SetMode::Upsert).unwrap();
    assert_eq!(
        read(&out, 1),
        one_parent(vec![("a", V::Int(9)), ("b", V::Int(2)), ("a", V::Int(9))])
    );
}

/// Per parent, string pairs to add: keys partly from the table's (`a`..`e`), partly new ones
/// (`new`, `k8s.pod.name`), repeats included (the first of a key wins).
fn arb_additions(parents: usize) -> impl Strategy<Value = Vec<Vec<(&'static str, &'static str)>>> {
    let keys = vec!["a", "b", "c", "d", "e", "new", "k8s.pod.name"];
    let values = vec!["", "pod-1", "10.0.0.7", "web", "héllo"];
    prop::collection::vec(
        prop::collection::vec(
            (prop::sample::select(keys), prop::sample::select(values)),
            0..5,
        ),
        parents,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// `insert_strings` against the Collector's `setResourceAttribute` applied pair by pair to
    /// a per-parent map: absent keys are appended, existing values kept unless empty (with
    /// `replace_empty`), the first pair of a key wins.
    #[test]
    fn insert_strings_matches_model(
        (m, adds) in arb_model().prop_flat_map(|m| { let n = m.len(); (Just(m), arb_additions(n)) }),
        replace_empty in any::<bool>(),
    ) {
        let mut add = StringsPerParent::with_capacity(m.len(), 0);
        for pairs in &adds {
            for (k, v) in pairs {
                add.push(k, v);
            }
            add.end_parent();
        }
        let out = insert_strings(&build(&m), &add, replace_empty).unwrap();
        let mut want = m.clone();
        for (p, pairs) in adds.iter().enumerate() {
            let mut done: Vec<&str> = Vec::new();
            for (k, v) in pairs {
                if done.contains(k) {
                    continue;
                }
                done.push(k);
                match want[p].iter_mut().find(|(key, _)| key == k) {
                    None => want[p].push((k.to_string(), V::Str(v.to_string()))),
                    Some((_, old)) => {
                        let empty = match old {
                            V::Str(s) => s.is_empty(),
                            V::Bytes(b) => b.is_empty(),
                            V::Empty | V::Absent => true,
                            _ => false,
                        };
                        if replace_empty && empty {
                            *old = V::Str(v.to_string());
                        }
                    }
                }
            }
        }
        prop_assert_eq!(read(&out, m.len()), want);
    }
}

#[test]
fn insert_strings_refuses_a_table_with_more_parents_than_given() {
    let m: Model = vec![vec![], vec![("a".into(), V::Int(1))]];
    let mut add = StringsPerParent::default();
    add.push("x", "y");
    add.end_parent();
    assert!(matches!(
        insert_strings(&build(&m), &add, false),
        Err(KernelError::ParentOutOfRange { .. })
    ));
}
