//! `tektite-devcluster`: the fake API server and its podman kubelet as one
//! process, until SIGINT or SIGTERM (then its pods are stopped). Writes
//! `DIR/kubeconfig` (with the token of its admin, `dev-admin`) and prints
//! the server's URL once it listens.
//! `hack/dev-cluster.sh up|down` starts it with the controller.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use tektite_devcluster::apiserver::ApiServer;
use tektite_devcluster::kubelet::Kubelet;

#[derive(Debug, Parser)]
#[command(
    name = "tektite-devcluster",
    about = "A stand-in Kubernetes API server with podman as its kubelet (not a cluster)"
)]
struct Args {
    /// Where the kubeconfig, the kubelet's containers' logs and state go
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// The address to listen on (loopback)
    #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR")]
    listen: String,
    /// CustomResourceDefinitions to create at start (YAML files)
    #[arg(long, value_name = "DIR")]
    crds: Option<PathBuf>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let api = ApiServer::start_on(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    if let Some(dir) = &args.crds {
        let n = tektite_devcluster::install_crds(&api.shared, dir)?;
        eprintln!("tektite-devcluster: {n} CustomResourceDefinitions created");
    }
    let kubeconfig = api.kubeconfig(&args.dir)?;
    let kubelet = Kubelet::start(api.shared.clone(), args.dir.join("kubelet"))?;
    println!("{}", api.url);
    eprintln!(
        "tektite-devcluster: serving {} (kubeconfig {})",
        api.url,
        kubeconfig.display()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    eprintln!("tektite-devcluster: stopping its pods");
    drop(kubelet);
    Ok(())
}
