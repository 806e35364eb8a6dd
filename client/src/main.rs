fn main() -> anyhow::Result<()> {
    anyhow::bail!("snapbackctl: not built yet")
}
