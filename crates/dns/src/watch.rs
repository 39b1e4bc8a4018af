//! Keeps the record set in step with the cluster: watchers of Services and
//! discovery.k8s.io/v1 EndpointSlices (as CoreDNS's kubernetes plugin's
//! informers). A relist replaces the whole set once it is complete.

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};

use crate::records::Records;

/// Watches Services and EndpointSlices in all namespaces into `records`
/// until the streams end (they retry with backoff, so: until dropped).
pub async fn watch(client: kube::Client, records: Records) {
    let services = {
        let records = records.clone();
        let api: Api<Service> = Api::all(client.clone());
        let mut stream = watcher::watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        async move {
            let mut relist: Vec<Service> = Vec::new();
            while let Some(event) = stream.next().await {
                match event {
                    Ok(Event::Apply(s)) => records.apply_service(&s),
                    Ok(Event::Delete(s)) => records.delete_service(&s),
                    Ok(Event::Init) => relist.clear(),
                    Ok(Event::InitApply(s)) => relist.push(s),
                    Ok(Event::InitDone) => {
                        records.replace_services(&std::mem::take(&mut relist));
                        tracing::debug!(services = records.service_count(), "services listed");
                    }
                    Err(e) => tracing::warn!(error = %e, "watching services"),
                }
            }
        }
    };
    let slices = {
        let api: Api<EndpointSlice> = Api::all(client);
        let mut stream = watcher::watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        async move {
            let mut relist: Vec<EndpointSlice> = Vec::new();
            while let Some(event) = stream.next().await {
                match event {
                    Ok(Event::Apply(s)) => records.apply_endpoint_slice(&s),
                    Ok(Event::Delete(s)) => records.delete_endpoint_slice(&s),
                    Ok(Event::Init) => relist.clear(),
                    Ok(Event::InitApply(s)) => relist.push(s),
                    Ok(Event::InitDone) => {
                        records.replace_endpoint_slices(&std::mem::take(&mut relist))
                    }
                    Err(e) => tracing::warn!(error = %e, "watching endpointslices"),
                }
            }
        }
    };
    futures::join!(services, slices);
}
