//! Which records of an answer answer the question asked: a server may
//! put records of other names in its answer section, and hickory hands
//! the section on as sent when it followed no CNAME.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use hickory_resolver::proto::rr::{Name, RData, Record};

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
        .filter_map(|r| usable_ip(r))
        .filter(|ip| family.admits(*ip))
        .collect()
}

/// An address record's address, unless it names no one host (`0.0.0.0`,
/// `::`, multicast, broadcast: a filtering resolver's "blocked" answer).
/// Dropped here, with the records, so an answer of nothing else is no
/// answer (the last list stays), a priority group of nothing else hands
/// over to the next, and none takes a `max_records` slot; dropped at the
/// answer's build, they emptied the list as a success, hid a backup SRV
/// group, and left 12 of 20 clients with an empty list at `max_records(2)`
/// (helper 195).
pub(super) fn usable_ip(record: &Record) -> Option<IpAddr> {
    record_ip(record).filter(|ip| !crate::instance::authority::ip_names_no_one_host(*ip))
}

/// An address record's address.
pub(super) fn record_ip(record: &Record) -> Option<IpAddr> {
    match &record.data {
        RData::A(a) => Some(IpAddr::V4(a.0)),
        RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
        _ => None,
    }
}
