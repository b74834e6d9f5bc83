//! [`ClientConfig::semantic_warnings`]: settings that were read but do
//! nothing as written.

use super::ClientConfig;

impl ClientConfig {
    /// Settings that were read but do nothing as written.
    pub(crate) fn semantic_warnings(&self, eureka_urls: &[String]) -> Vec<String> {
        // Quoted: a name from a quoted YAML key may hold a line break.
        let name = crate::error::quote(&self.name);
        let mut warnings = Vec::new();
        let affinity =
            self.enable_zone_affinity == Some(true) || self.enable_zone_exclusivity == Some(true);
        if (affinity || self.load_balancer.prefers_zone()) && self.zone.is_none() {
            warnings.push(format!(
                "client `{name}`: `EnableZoneAffinity`/`EnableZoneExclusivity`/`zone-preference` has no \
                 effect without a zone (`{name}.ribbon.zone`, `spring.cloud.loadbalancer.zone` or \
                 `eureka.instance.metadata-map.zone`)"
            ));
        }
        if self.enable_zone_exclusivity == Some(true) && self.zone.is_some() {
            warnings.push(format!(
                "client `{name}`: `EnableZoneExclusivity` is read as zone affinity: other zones are used \
                 when the own zone has no available instance"
            ));
        }
        if self.ping_interval.is_some() && self.health_check_path.is_none() {
            warnings.push(format!(
                "client `{name}`: `NFLoadBalancerPingInterval` has no effect without `HealthCheckPath`"
            ));
        }
        if self.list_of_servers.is_some()
            && !eureka_urls.is_empty()
            && self.server_list.is_none()
            && self.eureka_enabled != Some(false)
        {
            warnings.push(format!(
                "client `{name}`: both `listOfServers` and a Eureka URL are set; `listOfServers` is used \
                 (set `NIWSServerListClassName` to choose)"
            ));
        }
        warnings
    }
}
