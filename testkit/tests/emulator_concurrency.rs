//! A watcher started while objects are being created concurrently ends up
//! with every object (no event lost between its list and its watch).

use std::time::Duration;

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api,
    api::PostParams,
    runtime::{WatchStreamExt, reflector, watcher},
};
use testkit::emulator::Emulator;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_started_during_concurrent_creates_sees_every_object() {
    let emu = Emulator::start().await.unwrap();
    let client = emu.client().await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let creator = {
        let api = api.clone();
        tokio::spawn(async move {
            stream::iter(0..300)
                .map(|i| {
                    let api = api.clone();
                    async move {
                        let cm: ConfigMap =
                            serde_json::from_value(serde_json::json!({"metadata": {"name": format!("cm-{i}")}}))
                                .unwrap();
                        api.create(&PostParams::default(), &cm).await.unwrap();
                    }
                })
                .buffer_unordered(64)
                .collect::<Vec<_>>()
                .await;
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (store, writer) = reflector::store::<ConfigMap>();
    let watch = reflector::reflector(
        writer,
        watcher(Api::<ConfigMap>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .applied_objects();
    tokio::spawn(watch.for_each(|_| async {}));
    creator.await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let n = store.state().len();
        if n >= 300 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the watcher saw {n} of 300 objects"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
