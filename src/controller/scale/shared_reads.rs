//! Reads of input Secrets, shared by reconciles that ask at the same time.
//!
//! Many Integrations often share one input Secret (one client or master
//! credential for a whole tenant). When N of them reconcile at once (applied
//! together, or woken together by a change of that Secret) each would read
//! the same Secret. Here a reader joins a read that has not been sent yet;
//! while one read of a Secret is in flight, the next is queued and sent when
//! it returns. Every reader still gets data read *after* it asked, so never
//! older than the change that woke it, and a burst costs a few reads per
//! Secret instead of one per Integration. A lone reader reads at once.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use futures::{
    FutureExt,
    future::{BoxFuture, Shared},
};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

type Fetched = Result<Option<Secret>, Arc<kube::Error>>;
type Key = (String, String);

/// One read of a Secret and everyone waiting for it.
struct Batch {
    id: u64,
    /// Once sent, newcomers queue the next read instead of joining this one.
    sent: bool,
    read: Shared<BoxFuture<'static, Fetched>>,
}

#[derive(Default)]
struct State {
    /// The latest read of each Secret (queued or in flight).
    latest: HashMap<Key, Batch>,
    next_id: u64,
}

/// Shared reads of Secrets; cheap to clone.
#[derive(Clone, Default)]
pub struct SharedReads(Arc<Mutex<State>>);

/// How one read is made.
type Fetch = Box<dyn FnOnce() -> BoxFuture<'static, Fetched> + Send>;

impl SharedReads {
    /// The Secret `namespace/name` as read after this call began (None if it
    /// does not exist).
    pub async fn get(&self, client: &Client, namespace: &str, name: &str) -> Result<Option<Secret>, kube::Error> {
        let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
        let secret = name.to_string();
        let fetch: Fetch = Box::new(move || async move { api.get_opt(&secret).await.map_err(Arc::new) }.boxed());
        self.read((namespace.to_string(), name.to_string()), fetch)
            .await
            .map_err(|e| unshared(&e))
    }

    /// Joins the queued read of `key`, or queues one made with `fetch`.
    async fn read(&self, key: Key, fetch: Fetch) -> Fetched {
        let read = {
            let mut state = self.lock();
            match state.latest.get(&key) {
                Some(batch) if !batch.sent => batch.read.clone(),
                in_flight => {
                    let previous = in_flight.map(|b| b.read.clone());
                    state.next_id += 1;
                    let id = state.next_id;
                    let read = self.batch(key.clone(), id, previous, fetch);
                    state.latest.insert(
                        key,
                        Batch {
                            id,
                            sent: false,
                            read: read.clone(),
                        },
                    );
                    read
                }
            }
        };
        read.await
    }

    /// A read that waits for `previous` (still in flight) before it is sent.
    fn batch(
        &self,
        key: Key,
        id: u64,
        previous: Option<Shared<BoxFuture<'static, Fetched>>>,
        fetch: Fetch,
    ) -> Shared<BoxFuture<'static, Fetched>> {
        let this = self.clone();
        async move {
            if let Some(previous) = previous {
                let _ = previous.await;
            }
            // Under the lock that joiners check: whoever joined before this
            // point asked before the read was sent.
            if let Some(batch) = this.lock().latest.get_mut(&key).filter(|b| b.id == id) {
                batch.sent = true;
            }
            let fetched = fetch().await;
            let mut state = this.lock();
            if state.latest.get(&key).is_some_and(|b| b.id == id) {
                state.latest.remove(&key);
            }
            fetched
        }
        .boxed()
        .shared()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Each reader gets its own copy of a shared error.
fn unshared(e: &kube::Error) -> kube::Error {
    match e {
        kube::Error::Api(status) => kube::Error::Api(status.clone()),
        other => kube::Error::Service(other.to_string().into()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use serde_json::json;

    use super::*;

    fn client_id(secret: &Option<Secret>) -> String {
        let data = secret.as_ref().and_then(|s| s.data.clone()).unwrap_or_default();
        String::from_utf8(data["client_id"].0.clone()).unwrap()
    }

    fn secret(value: &str) -> Secret {
        serde_json::from_value(json!({"metadata": {"name": "shared"}, "data": {
            "client_id": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, value),
        }}))
        .unwrap()
    }

    /// A read that counts itself and takes a moment, as a request does.
    fn counted(reads: &Arc<AtomicUsize>) -> Fetch {
        let reads = reads.clone();
        Box::new(move || {
            async move {
                reads.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                Ok(Some(secret("one")))
            }
            .boxed()
        })
    }

    #[tokio::test]
    async fn many_readers_at_once_cost_two_reads_and_all_get_the_secret() {
        let key = || ("default".to_string(), "shared".to_string());
        let reads = SharedReads::default();
        let sent = Arc::new(AtomicUsize::new(0));

        let all = futures::future::join_all((0..50).map(|_| reads.read(key(), counted(&sent)))).await;

        assert!(all.iter().all(|r| r.as_ref().is_ok_and(|s| client_id(s) == "one")));
        // The first is sent at once; the 49 that came while it was in flight
        // share the next one.
        assert_eq!(sent.load(Ordering::SeqCst), 2);
        assert!(reads.lock().latest.is_empty(), "finished reads are forgotten");
    }

    #[tokio::test]
    async fn a_failed_read_fails_every_reader_that_shared_it() {
        let key = || ("default".to_string(), "shared".to_string());
        let reads = SharedReads::default();
        let failing = || -> Fetch {
            Box::new(|| {
                async {
                    let status =
                        kube::core::Status::failure("secrets \"shared\" is forbidden", "Forbidden").with_code(403);
                    Err(Arc::new(kube::Error::Api(status.boxed())))
                }
                .boxed()
            })
        };

        let all = futures::future::join_all((0..5).map(|_| reads.read(key(), failing()))).await;

        for r in all {
            match r.map_err(|e| unshared(&e)) {
                Err(kube::Error::Api(status)) => assert_eq!(status.code, 403),
                other => panic!("a reader got {other:?}"),
            }
        }
    }

    /// A read whose answer the test gives when it wants.
    fn controlled(sent: &Arc<Mutex<Vec<tokio::sync::oneshot::Sender<String>>>>) -> Fetch {
        let sent = sent.clone();
        Box::new(move || {
            let (answer, answered) = tokio::sync::oneshot::channel::<String>();
            sent.lock().unwrap().push(answer);
            async move { Ok(Some(secret(&answered.await.unwrap()))) }.boxed()
        })
    }

    #[tokio::test]
    async fn a_reader_never_gets_data_read_before_it_asked() {
        let reads = SharedReads::default();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let key = || ("default".to_string(), "shared".to_string());

        // A read is sent...
        let first = tokio::spawn({
            let (reads, fetch) = (reads.clone(), controlled(&sent));
            async move { reads.read(key(), fetch).await }
        });
        while sent.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        // ...the Secret changes, and a reader woken by that change asks
        // while the first read is still in flight.
        let second = tokio::spawn({
            let (reads, fetch) = (reads.clone(), controlled(&sent));
            async move { reads.read(key(), fetch).await }
        });
        tokio::task::yield_now().await;
        let answer = sent.lock().unwrap().remove(0);
        answer.send("old".into()).unwrap();
        assert_eq!(client_id(&first.await.unwrap().unwrap()), "old");
        // The second reader's read is sent only now, after the first.
        tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while sent.lock().unwrap().is_empty() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the second reader made no read of its own: it joined one sent before it asked");
        let answer = sent.lock().unwrap().remove(0);
        answer.send("new".into()).unwrap();
        assert_eq!(client_id(&second.await.unwrap().unwrap()), "new");
    }
}
