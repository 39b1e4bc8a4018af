//! `skiff bench crd`: the benchmark of the extensibility issue. Creates/s
//! and latency of a custom resource whose schema has 50 fields and 3 CEL
//! rules, side by side with ConfigMaps in the same run (alternating
//! rounds), then the p99 a validating webhook adds to ConfigMap creates.
//! It prints figures; it never fails on a slow one.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use kube::core::GroupVersionKind;
use serde_json::{Value, json};

use super::bench::{ms, percentile, start_server_with};

const NAMESPACE: &str = "bench-crd";
const GROUP: &str = "bench.skiff.dev";
const FIELDS: usize = 50;

/// The definition: 50 typed, bounded fields and 3 CEL rules.
fn definition() -> Value {
    let mut props = serde_json::Map::new();
    for i in 0..FIELDS {
        let schema = match i % 5 {
            0 => json!({"type": "string", "maxLength": 64}),
            1 => json!({"type": "integer", "minimum": 0, "maximum": 1_000_000}),
            2 => json!({"type": "boolean"}),
            3 => json!({"type": "string", "enum": ["a", "b", "c"]}),
            _ => {
                json!({"type": "array", "maxItems": 8, "items": {"type": "string", "maxLength": 16}})
            }
        };
        props.insert(format!("f{i}"), schema);
    }
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("widgets.{GROUP}")},
        "spec": {
            "group": GROUP, "scope": "Namespaced",
            "names": {"plural": "widgets", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {"spec": {
                    "type": "object",
                    "properties": props,
                    "x-kubernetes-validations": [
                        {"rule": "self.f1 <= self.f6 + 1000000", "message": "f1 must not exceed f6 by a million"},
                        {"rule": "self.f0.size() <= 64"},
                        {"rule": "self.f4.all(x, x.size() > 0)", "message": "f4 items must not be empty"}
                    ]
                }}
            }}}]
        }
    })
}

fn widget(name: &str) -> Value {
    let mut spec = serde_json::Map::new();
    for i in 0..FIELDS {
        let v = match i % 5 {
            0 => json!(format!("value-{i}")),
            1 => json!(i * 10),
            2 => json!(i % 2 == 0),
            3 => json!("b"),
            _ => json!(["x", "y"]),
        };
        spec.insert(format!("f{i}"), v);
    }
    json!({"apiVersion": format!("{GROUP}/v1"), "kind": "Widget", "metadata": {"name": name}, "spec": spec})
}

fn config_map(name: &str) -> Value {
    let data: serde_json::Map<String, Value> = (0..FIELDS)
        .map(|i| (format!("f{i}"), json!(format!("value-{i}"))))
        .collect();
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data})
}

/// Create `n` objects with `concurrency` in flight; (creates/s, sorted latencies).
async fn creates(
    api: &Api<DynamicObject>,
    n: usize,
    concurrency: usize,
    make: impl Fn(usize) -> Value,
) -> anyhow::Result<(f64, Vec<Duration>)> {
    let objects: Vec<DynamicObject> = (0..n)
        .map(|i| serde_json::from_value(make(i)))
        .collect::<Result<_, _>>()?;
    let start = Instant::now();
    let mut lat: Vec<Duration> = futures::stream::iter(objects)
        .map(|o| {
            let api = api.clone();
            async move {
                let t = Instant::now();
                api.create(&PostParams::default(), &o).await?;
                anyhow::Ok(t.elapsed())
            }
        })
        .buffer_unordered(concurrency)
        .try_collect()
        .await?;
    let rate = n as f64 / start.elapsed().as_secs_f64();
    lat.sort();
    Ok((rate, lat))
}

fn line(label: &str, (rate, lat): &(f64, Vec<Duration>)) {
    println!(
        "  {label:<34} {rate:>8.0} creates/s   p50 {:>6.2} ms   p99 {:>6.2} ms",
        ms(percentile(lat, 0.5)),
        ms(percentile(lat, 0.99))
    );
}

pub async fn run(n: usize, concurrency: usize, rounds: usize) -> anyhow::Result<ExitCode> {
    let child = start_server_with(false, &[])?;
    let admin = super::bench::client(&child.kubeconfig).await?;
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NAMESPACE}}))?;
    Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    crds.create(
        &PostParams::default(),
        &serde_json::from_value(definition())?,
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let crd = serde_json::to_value(crds.get(&format!("widgets.{GROUP}")).await?)?;
        let established = crd["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Established" && c["status"] == "True")
        });
        if established {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the definition was not established"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let widgets = Api::<DynamicObject>::namespaced_with(
        admin.clone(),
        NAMESPACE,
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(GROUP, "v1", "Widget"),
            "widgets",
        ),
    );
    let cms = Api::<DynamicObject>::namespaced_with(
        admin.clone(),
        NAMESPACE,
        &ApiResource::erase::<ConfigMap>(&()),
    );
    println!(
        "crd: {n} creates per round, {concurrency} in flight, {rounds} alternating rounds; custom resource: {FIELDS}-field schema, 3 CEL rules; ConfigMap: {FIELDS} keys"
    );
    let (mut cm_all, mut cr_all) = (Vec::new(), Vec::new());
    let (mut cm_rate, mut cr_rate) = (0.0, 0.0);
    for r in 0..rounds {
        let cm = creates(&cms, n, concurrency, |i| config_map(&format!("cm-{r}-{i}"))).await?;
        line(&format!("round {r} ConfigMap"), &cm);
        let cr = creates(&widgets, n, concurrency, |i| widget(&format!("w-{r}-{i}"))).await?;
        line(&format!("round {r} Widget (custom resource)"), &cr);
        cm_rate += cm.0;
        cr_rate += cr.0;
        cm_all.extend(cm.1);
        cr_all.extend(cr.1);
    }
    cm_all.sort();
    cr_all.sort();
    let rounds_f = rounds.max(1) as f64;
    println!(
        "  custom resource / ConfigMap creates/s: {:.2} ({:.0} / {:.0}); p99 {:.2} / {:.2} ms",
        cr_rate / cm_rate.max(f64::MIN_POSITIVE),
        cr_rate / rounds_f,
        cm_rate / rounds_f,
        ms(percentile(&cr_all, 0.99)),
        ms(percentile(&cm_all, 0.99)),
    );

    // One validating webhook (allows everything) on ConfigMaps; a second
    // one in the same configuration refuses only probe objects, so that
    // the configuration is known to be in force before measuring.
    let hook = skiff_testsupport::webhook::serve().await;
    let config: ValidatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": {"name": "bench-allow"},
        "webhooks": [
            hook.webhook("allow.bench.skiff.dev", "/allow", json!({})),
            hook.webhook("probe.bench.skiff.dev", "/deny", json!({"objectSelector": {"matchLabels": {"deny": "true"}}}))
        ]
    }))?;
    Api::<ValidatingWebhookConfiguration>::all(admin.clone())
        .create(&PostParams::default(), &config)
        .await
        .context("registering the webhook")?;
    let probe: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "probe", "labels": {"deny": "true"}}
    }))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while cms.create(&PostParams::default(), &probe).await.is_ok() {
        cms.delete("probe", &Default::default()).await?;
        anyhow::ensure!(Instant::now() < deadline, "the webhook did not take effect");
    }
    let hooked = creates(&cms, n, concurrency, |i| config_map(&format!("hooked-{i}"))).await?;
    line("ConfigMap with one webhook", &hooked);
    println!(
        "  added by one validating webhook: p50 {:+.2} ms, p99 {:+.2} ms",
        ms(percentile(&hooked.1, 0.5)) - ms(percentile(&cm_all, 0.5)),
        ms(percentile(&hooked.1, 0.99)) - ms(percentile(&cm_all, 0.99)),
    );
    Ok(ExitCode::SUCCESS)
}
