//! `make demo` as a test, so it cannot rot: the real operator binary, the
//! real kubectl and every example manifest against a real kube-apiserver
//! (`testkit::control_plane`) and the provider simulators. The demo itself fails when an Integration does not
//! become Ready or a simulator does not accept what the operator published.

use std::path::PathBuf;

use testkit::demo::{DemoArgs, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn make_demo_passes() {
    std::env::set_current_dir(env!("CARGO_MANIFEST_DIR")).unwrap();
    run(DemoArgs {
        operator: PathBuf::from(env!("CARGO_BIN_EXE_integration-operator")),
        kubectl: std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into()),
        token_lifetime: 6,
        renewals: 2,
        // Not make demo's directory: the two may run at the same time.
        workdir: PathBuf::from(concat!(env!("CARGO_TARGET_TMPDIR"), "/demo")),
    })
    .await
    .expect("the demo passes");
}
