//! Which records of an answer answer the question asked: a server may
//! put records of other names in its answer section, and hickory hands
//! the section on as sent when it followed no CNAME.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use hickory_resolver::proto::rr::{Name, RData, Record};

use super::records::record_ip;

/// The records of `answers` that answer a question for one of `asked`
/// (the name the lookup asked, and the names the caller asked for: a
/// chain followed query by query ends on a later name, whose lookup holds
/// the earlier CNAMEs): owned by one of them, or by a name their CNAME
/// chains in `answers` lead to, however long. A server may put records of
/// other names in its answer section, and hickory hands the section on as
/// sent when it followed no CNAME: they answer another question (helper
/// 192: `A unrelated.example. 127.0.0.72` beside `A users.test.` became an
/// instance and got 5 of 10 requests, and an SRV of another owner added
/// its target). The resolver keeps a chain's CNAMEs in the answers it
/// assembles (`preserve_intermediates`). Names compare as DNS compares
/// them (ASCII case, a final dot); linear in the answer.
pub(super) fn answering<'a>(answers: &'a [Record], asked: &[&Name]) -> Vec<&'a Record> {
    let key = |name: &Name| name.to_ascii().trim_end_matches('.').to_ascii_lowercase();
    let mut chains: HashMap<String, Vec<String>> = HashMap::new();
    for r in answers {
        if let RData::CNAME(cname) = &r.data {
            chains.entry(key(&r.name)).or_default().push(key(&cname.0));
        }
    }
    let mut names: HashSet<String> = asked.iter().map(|n| key(n)).collect();
    let mut next: Vec<String> = names.iter().cloned().collect();
    while let Some(name) = next.pop() {
        for target in chains.get(&name).into_iter().flatten() {
            if names.insert(target.clone()) {
                next.push(target.clone());
            }
        }
    }
    answers.iter().filter(|r| names.contains(&key(&r.name))).collect()
}

/// The names a lookup of `name` may ask: `name`, and if it is not
/// absolute `name` under each domain of `search`.
pub(super) fn asked_names(name: &Name, search: &[String]) -> Vec<Name> {
    let mut names = vec![name.clone()];
    if !name.is_fqdn() {
        for domain in search {
            let appended = Name::from_ascii(domain).and_then(|d| name.clone().append_domain(&d));
            names.extend(appended.ok());
        }
    }
    names
}

/// [`answering`] for a lookup of `asked` (and its search names).
pub(super) fn answering_lookup<'a>(
    lookup: &'a hickory_resolver::lookup::Lookup,
    asked: &[Name],
) -> Vec<&'a Record> {
    let names: Vec<&Name> = std::iter::once(lookup.query().name()).chain(asked).collect();
    answering(lookup.answers(), &names)
}

/// The addresses of `records` that `family` admits.
pub(super) fn addresses(records: &[&Record], family: super::IpFamily) -> Vec<IpAddr> {
    (records.iter())
        .filter_map(|r| record_ip(r))
        .filter(|ip| family.admits(*ip))
        .collect()
}
