//! [`VipSource`]: Eureka's VIP address lookup as an instance source.

use super::super::client::{EurekaHttp, Fetched};
use super::super::wire::{self, Applications, ParseOptions};
use crate::discovery::{FetchFuture, InstanceSource};
use crate::error::DiscoveryError;

/// An [`InstanceSource`] backed by Eureka's VIP lookup, `GET /vips/{vip}`:
/// the request's service id is the VIP address (`user-service`), and every
/// application registered under it contributes instances.
#[derive(Clone, Debug)]
pub struct VipSource {
    pub(super) http: EurekaHttp,
    pub(super) options: ParseOptions,
}

impl InstanceSource for VipSource {
    fn fetch<'a>(&'a self, service_id: &'a str) -> FetchFuture<'a> {
        Box::pin(async move {
            let vip = service_id.trim();
            if super::super::not_a_segment(vip) {
                return Err(DiscoveryError::UnknownService {
                    service: vip.to_owned(),
                });
            }
            let path = format!(
                "vips/{}",
                percent_encoding::utf8_percent_encode(vip, super::super::PATH_SEGMENT)
            );
            let options = self.options;
            let apps = match self
                .http
                .get(&path, true, Applications::lists_nothing, move |body, deadline| {
                    wire::decode_applications(body, options, Some(deadline))
                })
                .await?
            {
                Fetched::Found(apps) => apps,
                Fetched::NotFound => Applications::default(),
            };
            Ok(apps
                .applications
                .into_iter()
                .flat_map(super::super::last_per_id)
                .collect())
        })
    }
}
