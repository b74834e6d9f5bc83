//! `.properties` documents split as Spring Boot 3.5.16's
//! `OriginTrackedPropertiesLoader` splits them (helper 213 loaded each file
//! with it): the last comment's character survives a separator, lines that
//! store no key (`=junk`, `:`, `\ `, a lone `\`) leave a document empty
//! (so a comment after them undoes the separator), and `\#---` is a
//! separator. Before, a key Spring keeps inside a skipped `chaos`
//! document applied here (a POST then went to a second server), or the
//! base document was dropped.
#![cfg(feature = "config")]
use tower_ribbon::config::RibbonConfig;

const HEAD: &str = "svc.ribbon.listOfServers=127.0.0.1:1\nsvc.ribbon.MaxAutoRetriesNextServer=0\n#---\nspring.config.activate.on-profile=chaos\nsvc.ribbon.MaxAutoRetriesNextServer=5\n";
const POST: &str = "svc.ribbon.OkToRetryOnAllOperations=true\n";

fn all_ops(middle: &str) -> Option<bool> {
    let p = format!("{HEAD}{middle}{POST}");
    RibbonConfig::from_properties_str(&p)
        .unwrap()
        .client("svc")
        .ok_to_retry_on_all_operations
}

#[test]
fn comment_char_survives_a_separator() {
    // Spring: `!---` splits, `#---` (same char as `# end chaos`) is a
    // comment that undoes it: POST key stays in the chaos document.
    assert_eq!(all_ops("# end chaos\n!---\n#---\n"), None);
}

#[test]
fn empty_key_lines_do_not_fill_a_document() {
    for middle in [
        "#---\n=junk\n# c\n",
        "#---\n:\n! c\n",
        "#---\n \\ \n# c\n",
        "#---\n\\\n# c\n",
    ] {
        assert_eq!(all_ops(middle), None, "{middle:?}");
    }
}

/// The reverse: Spring splits, so the base document applies there
/// (MaxAutoRetriesNextServer 0); here the whole file is one chaos
/// document and the client has no settings (observed None).
#[test]
fn escaped_hash_separator_splits_in_spring() {
    let p = "svc.ribbon.listOfServers=127.0.0.1:1\nsvc.ribbon.MaxAutoRetriesNextServer=0\n\\#---\nspring.config.activate.on-profile=chaos\nsvc.ribbon.MaxAutoRetriesNextServer=5\n";
    let c = RibbonConfig::from_properties_str(p).unwrap();
    assert_eq!(c.client("svc").max_auto_retries_next_server, Some(0));
}
