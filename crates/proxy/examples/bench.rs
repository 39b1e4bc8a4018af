//! `cargo run -p skiff-proxy --example bench -- [services] [endpoints] [vmap]` (root):
//! runs `skiff_proxy::bench` against a throwaway network namespace.

use std::process::Command;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let services: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(5000);
    let endpoints: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(10);
    let selection = if args.next().as_deref() == Some("vmap") {
        skiff_proxy::rules::Selection::Vmap
    } else {
        skiff_proxy::rules::Selection::Cascade
    };
    let ns = format!("skiff-proxy-bench-{}", std::process::id());
    let status = Command::new("ip").args(["netns", "add", &ns]).status()?;
    if !status.success() {
        return Err("ip netns add failed (root needed)".into());
    }
    let result = skiff_proxy::bench(
        skiff_proxy::RealNft::in_netns(&ns),
        "skiff-proxy-bench",
        services,
        endpoints,
        selection,
    )
    .await;
    let _ = Command::new("ip").args(["netns", "delete", &ns]).status();
    println!("{}", result?);
    Ok(())
}
