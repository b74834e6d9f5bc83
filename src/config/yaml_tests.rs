//! Unit tests of `config::yaml`.

use super::*;

#[test]
fn yaml_flattens_to_dotted_keys() {
    let pairs = flatten_yaml_str(
        "a:\n  b:\n    c: 1\n  list: [x, 2, true]\n  empty:\n  objs:\n    - k: v\n---\nd.e: 1.5\n",
    )
    .unwrap();
    assert_eq!(
        pairs,
        [
            ("a.b.c".to_owned(), "1".to_owned()),
            ("a.list".to_owned(), "x,2,true".to_owned()),
            ("a.empty".to_owned(), String::new()),
            ("a.objs[0].k".to_owned(), "v".to_owned()),
            ("d.e".to_owned(), "1.5".to_owned()),
        ]
    );
    for bad in ["- a\n- b\n", "a: [b\n", "a: *nowhere\n", "{[a]: b}\n"] {
        let err = flatten_yaml_str(bad).unwrap_err();
        assert_eq!(err.kind(), ConfigErrorKind::Yaml, "{bad}: {err}");
    }
    assert!(flatten_yaml_str("").unwrap().is_empty());
    assert!(flatten_yaml_str("---\n...\n").unwrap().is_empty());
}

#[test]
fn anchors_aliases_and_merge_keys() {
    let pairs = flatten_yaml_str(
        "defaults: &d\n  retry: 1\n  zone: z1\nsvc:\n  <<: *d\n  zone: z2\nother: *d\n",
    )
    .unwrap();
    let got: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("defaults.retry", "1"),
            ("defaults.zone", "z1"),
            // The map's own `zone` beats the merged one, which is
            // left out (SnakeYAML's merge).
            ("svc.retry", "1"),
            ("svc.zone", "z2"),
            ("other.retry", "1"),
            ("other.zone", "z1"),
        ]
    );
}

#[test]
fn depth_is_bounded() {
    let deep: String = (0..300)
        .map(|i| format!("{}k{i}:\n", " ".repeat(i * 2)))
        .collect();
    let err = flatten_yaml_str(&deep).unwrap_err();
    assert_eq!(
        (err.kind(), err.limit()),
        (ConfigErrorKind::TooLarge, Some(MAX_DEPTH as u64))
    );
    let flow = format!("a: {}{}\n", "[".repeat(200), "]".repeat(200));
    assert_eq!(
        flatten_yaml_str(&flow).unwrap_err().kind(),
        ConfigErrorKind::TooLarge
    );
    // The scanner's own flow limit (255) answers first here.
    let flow = format!("a: {}{}\n", "[".repeat(10_000), "]".repeat(10_000));
    let kind = flatten_yaml_str(&flow).unwrap_err().kind();
    assert!(
        matches!(kind, ConfigErrorKind::Yaml | ConfigErrorKind::TooLarge),
        "{kind:?}"
    );
    let ok: String = (0..MAX_DEPTH)
        .map(|i| format!("{}k{i}:\n", " ".repeat(i * 2)))
        .collect();
    assert_eq!(flatten_yaml_str(&ok).unwrap().len(), 1);
}
