//! The service account controller and root CA publisher against a real API server.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use skiff_controllers::serviceaccount::{self, ROOT_CA_CONFIGMAP, ROOT_CA_KEY};
use skiff_controllers::{Config, Context};
use skiff_testsupport::{TestServer, eventually};

fn context(server: &TestServer) -> Context {
    Context {
        client: server.client.clone(),
        recorder: Arc::new(skiff_runtime::events::Recorder::new(
            server.client.clone(),
            "controller-manager",
            None,
        )),
        config: Arc::new(Config::default()),
        informers: skiff_controllers::shared::SharedInformers::new(server.client.clone()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_service_account_and_root_ca_in_every_namespace() {
    let server = TestServer::start().await;
    let client = server.client.clone();
    let ca = serviceaccount::root_ca_from_kubeconfig(&server.kubeconfig)
        .await
        .unwrap()
        .expect("the kubeconfig names a CA");
    assert_eq!(
        ca.trim(),
        server.running.ca_pem.trim(),
        "the CA read back from the kubeconfig is the server's"
    );
    let controller = tokio::spawn(serviceaccount::run_with_root_ca(
        context(&server),
        Some(ca.clone()),
    ));

    // Namespaces that existed before the controller started.
    for ns in ["default", "kube-system", "kube-public"] {
        let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
        eventually(&format!("the default service account in {ns}"), || async {
            sas.get_opt("default").await.unwrap()
        })
        .await;
    }

    // A new namespace gets both.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some("team-a".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "team-a");
    let sa = eventually("the default service account in team-a", || async {
        sas.get_opt("default").await.unwrap()
    })
    .await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "team-a");
    let cm = eventually("kube-root-ca.crt in team-a", || async {
        cms.get_opt(ROOT_CA_CONFIGMAP).await.unwrap()
    })
    .await;
    assert_eq!(cm.data.as_ref().and_then(|d| d.get(ROOT_CA_KEY)), Some(&ca));
    assert!(
        cm.metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key("kubernetes.io/description"))
    );

    // Deleted: recreated.
    sas.delete("default", &DeleteParams::default())
        .await
        .unwrap();
    let old_uid = sa.metadata.uid.clone();
    eventually("the default service account to come back", || async {
        sas.get_opt("default")
            .await
            .unwrap()
            .filter(|s| s.metadata.uid != old_uid)
    })
    .await;

    // Tampered with: restored.
    let mut tampered = cms.get(ROOT_CA_CONFIGMAP).await.unwrap();
    tampered.data = Some([(ROOT_CA_KEY.to_string(), "not a CA".to_string())].into());
    cms.replace(ROOT_CA_CONFIGMAP, &PostParams::default(), &tampered)
        .await
        .unwrap();
    eventually("kube-root-ca.crt restored", || async {
        cms.get_opt(ROOT_CA_CONFIGMAP)
            .await
            .unwrap()
            .filter(|c| c.data.as_ref().and_then(|d| d.get(ROOT_CA_KEY)) == Some(&ca))
    })
    .await;
    cms.delete(ROOT_CA_CONFIGMAP, &DeleteParams::default())
        .await
        .unwrap();
    eventually("kube-root-ca.crt recreated", || async {
        cms.get_opt(ROOT_CA_CONFIGMAP).await.unwrap()
    })
    .await;

    controller.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_ca_only_service_accounts() {
    let server = TestServer::start().await;
    let client = server.client.clone();
    let controller = tokio::spawn(serviceaccount::run_with_root_ca(context(&server), None));
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some("team-b".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "team-b");
    eventually("the default service account in team-b", || async {
        sas.get_opt("default").await.unwrap()
    })
    .await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "team-b");
    assert!(cms.get_opt(ROOT_CA_CONFIGMAP).await.unwrap().is_none());
    controller.abort();
}
