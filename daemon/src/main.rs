fn main() -> anyhow::Result<()> {
    anyhow::bail!("snapbackd: not built yet")
}
