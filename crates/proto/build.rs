//! Compiles proto/ with protox (pure Rust: no system protoc) and writes the
//! descriptor set that servers embed for reflection.

use std::path::PathBuf;

const SERVICES: &[&str] = &[
    "tenants",
    "subjects",
    "consents",
    "retention",
    "rights",
    "audit",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files: Vec<PathBuf> = SERVICES
        .iter()
        .map(|s| root.join(format!("vern/{s}/v1/{s}.proto")))
        .chain(
            ["common", "permission"]
                .iter()
                .map(|f| root.join(format!("vern/common/v1/{f}.proto"))),
        )
        .collect();
    println!("cargo:rerun-if-changed={}", root.display());

    let mut compiler = protox::Compiler::new([&root])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(&files)?;
    let fds = compiler.file_descriptor_set();

    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    // compile_fds does not write the descriptor set; reflection needs it.
    std::fs::write(
        out.join("vern_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // RPCs not built yet answer UNIMPLEMENTED instead of failing to compile.
        .generate_default_stubs(true)
        .compile_fds(fds)?;
    Ok(())
}
