//! Compiles `proto/**/*.proto` with protox (pure Rust, so no system `protoc` is needed) and
//! generates tonic clients and servers plus one encoded file descriptor set per package.

use std::path::PathBuf;

/// Each package's files are compiled together: prost writes one Rust file per package.
const PACKAGES: &[(&[&str], &str)] = &[
    (&["lab/audit/v1/audit.proto"], "audit_descriptor.bin"),
    (
        &["lab/order/v1/order.proto", "lab/order/v1/ops.proto"],
        "order_descriptor.bin",
    ),
    (
        &[
            "lab/approval/v1/approval.proto",
            "lab/approval/v1/ops.proto",
        ],
        "approval_descriptor.bin",
    ),
];

/// The audit event is one message shared by both services' OpsService: generated once, in
/// `lab.audit.v1`, and referred to from the packages that import it.
const SHARED: &[(&str, &str)] = &[(".lab.audit.v1", "crate::audit::v1")];

/// Described to reflection clients but not generated: tonic-types has the Rust types.
const DESCRIBED_ONLY: &[(&str, &str)] = &[(
    "google/rpc/error_details.proto",
    "error_details_descriptor.bin",
)];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed=lab");
    println!("cargo:rerun-if-changed=google");
    for (file, descriptor_name) in DESCRIBED_ONLY {
        let descriptors = protox::compile([file], ["."])?;
        std::fs::write(
            out_dir.join(descriptor_name),
            prost::Message::encode_to_vec(&descriptors),
        )?;
    }
    for (files, descriptor_name) in PACKAGES {
        let descriptors = protox::compile(*files, ["."])?;
        std::fs::write(
            out_dir.join(descriptor_name),
            prost::Message::encode_to_vec(&descriptors),
        )?;
        let mut builder = tonic_prost_build::configure();
        for (proto_path, rust_path) in SHARED {
            if !files
                .iter()
                .any(|file| proto_path[1..].replace('.', "/") == file_package(file))
            {
                builder = builder.extern_path(*proto_path, *rust_path);
            }
        }
        builder
            .build_client(true)
            .build_server(true)
            .compile_fds(descriptors)?;
    }
    Ok(())
}

/// `lab/audit/v1/audit.proto` → `lab/audit/v1`.
fn file_package(file: &str) -> &str {
    file.rsplit_once('/').map_or("", |(directory, _)| directory)
}
