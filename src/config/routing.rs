//! The one source of a balancer over configured clients of both kinds
//! (static lists and Eureka), routed per service id.

use std::collections::HashMap;
use std::sync::Arc;

use super::client::ClientConfig;
use super::error::ConfigError;
use super::eureka::PerServiceSource;
use super::reader::{RibbonConfig, static_source};
use crate::discovery::InstanceSource;
use crate::service::Builder;

impl RibbonConfig {
    /// `builder` with the source of `statics` (one `StaticSource`) and of
    /// `eurekas` (one Eureka source, named after `first` when alone),
    /// routed per service id when both kinds are present.
    pub(super) fn sources(
        &self,
        builder: Builder,
        statics: &[ClientConfig],
        eurekas: &[String],
        first: &str,
    ) -> Result<Builder, ConfigError> {
        Ok(match (statics.is_empty(), eurekas.first()) {
            (_, None) => builder.source(static_source(statics)),
            (true, Some(_)) => builder.source(self.eureka.source(first)?),
            (false, Some(eureka)) => {
                let statics_source: Arc<dyn InstanceSource> = Arc::new(static_source(statics));
                let eureka_source = self.eureka.source(eureka)?;
                let mut routes = HashMap::new();
                for client in statics {
                    routes.insert(
                        crate::discovery::service_key(&client.name),
                        Arc::clone(&statics_source),
                    );
                }
                for name in eurekas {
                    routes.insert(crate::discovery::service_key(name), Arc::clone(&eureka_source));
                }
                builder.source(PerServiceSource { routes })
            }
        })
    }
}
