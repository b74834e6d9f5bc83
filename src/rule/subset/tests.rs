use super::super::RoundRobin;
use super::super::test_support::{index, snapshot};
use super::*;

/// `(instance id, n, size, subset)`, printed by OpenJDK 17 running SCLB's
/// algorithm (`hashCode() & MAX_VALUE`, `new Random(round)`,
/// `Collections.shuffle`, `subList`) on the list `0..n`.
const JAVA: &[(&str, usize, usize, &[usize])] = &[
    ("client-1", 10, 3, &[8, 4, 1]),
    ("client-1", 7, 2, &[1, 5]),
    (
        "client-1",
        100,
        10,
        &[55, 61, 72, 14, 21, 91, 31, 58, 12, 95],
    ),
    ("client-1", 5, 4, &[4, 0, 1, 3]),
    ("client-1", 23, 5, &[5, 2, 4, 13, 18]),
    ("gateway:8080", 10, 3, &[7, 6, 9]),
    ("gateway:8080", 7, 2, &[2, 6]),
    (
        "gateway:8080",
        100,
        10,
        &[59, 55, 95, 73, 79, 97, 53, 75, 13, 93],
    ),
    ("gateway:8080", 23, 5, &[11, 15, 7, 1, 4]),
    ("", 10, 3, &[4, 8, 9]),
    ("", 100, 10, &[24, 54, 94, 80, 47, 40, 63, 97, 42, 96]),
    ("ünïcode-☃", 10, 3, &[8, 1, 0]),
    ("ünïcode-☃", 100, 10, &[84, 63, 3, 45, 5, 64, 2, 58, 16, 10]),
    (
        "a-very-long-instance-id-0123456789",
        23,
        5,
        &[13, 22, 21, 0, 18],
    ),
];

#[test]
fn subsets_match_java() {
    for (id, n, size, want) in JAVA {
        assert_eq!(subset_indices(id, *n, *size), *want, "{id} {n} {size}");
    }
    assert_eq!(subset_indices("x", 3, 5), [0, 1, 2]);
    assert_eq!(subset_indices("x", 3, 0), [0, 1, 2]);
}

#[test]
fn picks_stay_in_the_subset_and_fail_open() {
    let s = snapshot(10);
    let rule = Subset::new(RoundRobin::with_start(0), "client-1").size(3);
    let p = rule.build(&s);
    let ctx = PickContext::new();
    let mut seen: Vec<usize> = (0..30).map(|_| index(p.pick(&ctx).unwrap())).collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen, [1, 4, 8]);
    let excluded: Vec<Endpoint> = [1, 4, 8]
        .iter()
        .map(|i| s.endpoints()[*i].clone())
        .collect();
    let e = p.pick(&ctx.with_excluded(&excluded)).unwrap();
    assert!(![1, 4, 8].contains(&index(e)));
    // A list no longer than the subset: the inner picker itself.
    let all = Subset::new(RoundRobin::with_start(0), "c").build(&snapshot(5));
    assert!(format!("{all:?}").starts_with("RoundRobinPicker"));
    assert_eq!(rule.instance_id(), "client-1");
    assert_eq!(rule.name(), "subset");
}

#[test]
fn a_hash_of_i32_min_and_a_long_list_match_java() {
    // "polygenelubricants".hashCode() is Integer.MIN_VALUE: `& MAX_VALUE`
    // makes it 0 (where Math.abs would stay negative). Printed by OpenJDK.
    assert_eq!(java::string_hash("polygenelubricants"), i32::MIN);
    assert_eq!(subset_indices("polygenelubricants", 10, 3), [4, 8, 9]);
    assert_eq!(
        subset_indices("polygenelubricants", 100, 7),
        [24, 54, 94, 80, 47, 40, 63]
    );
    assert_eq!(subset_indices("polygenelubricants", 1000, 1).len(), 1);
    let big = subset_indices("gateway:8080", 100_000, 100);
    assert_eq!(big[..5], [3678, 72277, 56974, 65654, 78633]);
    assert_eq!((big.len(), big[99]), (100, 65547));
}
