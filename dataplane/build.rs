//! Builds nothing by default. With the `dpdk` feature: finds the system DPDK with pkg-config,
//! compiles the C shim for its static inline functions (`dpdk/shim.c`) and generates the
//! bindings the `dpdk` module includes (bindgen, which needs libclang).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "dpdk")]
    dpdk::build();
}

#[cfg(feature = "dpdk")]
mod dpdk {
    use std::path::PathBuf;

    pub(super) fn build() {
        println!("cargo:rerun-if-changed=dpdk/shim.c");
        println!("cargo:rerun-if-changed=dpdk/shim.h");
        let library = pkg_config::Config::new()
            .atleast_version("21.11")
            .probe("libdpdk")
            .unwrap_or_else(|e| {
                panic!(
                    "the `dpdk` feature needs DPDK's development files (Debian: apt-get install \
                     dpdk-dev libdpdk-dev libclang-dev pkg-config): {e}"
                )
            });
        // pkg-config's cflags carry `-include rte_config.h` and the -march DPDK was built for.
        // (The pkg-config crate keeps only -I and -D of them; ask the tool itself.)
        let cflags =
            std::process::Command::new(std::env::var("PKG_CONFIG").unwrap_or("pkg-config".into()))
                .args(["--cflags", "libdpdk"])
                .output()
                .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
                .unwrap_or_default();
        let mut extra: Vec<String> = Vec::new();
        let mut words = cflags.split_whitespace();
        while let Some(word) = words.next() {
            if word == "-include" {
                if let Some(file) = words.next() {
                    extra.push(format!("-include{file}"));
                }
            } else if word.starts_with("-march") || word.starts_with("-D") {
                extra.push(word.to_string());
            }
        }
        let mut cc = cc::Build::new();
        cc.file("dpdk/shim.c").opt_level(3).warnings(true);
        for path in &library.include_paths {
            cc.include(path);
        }
        for flag in &extra {
            cc.flag(flag);
        }
        cc.compile("cradle_dpdk_shim");

        let mut bindings = bindgen::Builder::default()
            .header("dpdk/shim.h")
            .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
            .allowlist_function("cradle_.*")
            .allowlist_function("rte_eal_init")
            .allowlist_function("rte_eal_cleanup")
            .allowlist_function("rte_strerror")
            .allowlist_function("rte_thread_register")
            .allowlist_function("rte_eth_find_next")
            .allowlist_function("rte_eth_dev_get_port_by_name")
            .allowlist_function("rte_eth_dev_get_name_by_port")
            .allowlist_function("rte_eth_dev_info_get")
            .allowlist_function("rte_eth_dev_configure")
            .allowlist_function("rte_eth_dev_socket_id")
            .allowlist_function("rte_eth_rx_queue_setup")
            .allowlist_function("rte_eth_tx_queue_setup")
            .allowlist_function("rte_eth_dev_start")
            .allowlist_function("rte_eth_dev_stop")
            .allowlist_function("rte_eth_dev_close")
            .allowlist_function("rte_eth_macaddr_get")
            .allowlist_function("rte_eth_stats_get")
            .allowlist_function("rte_eth_link_get_nowait")
            .allowlist_function("rte_pktmbuf_pool_create")
            .allowlist_function("rte_mempool_free")
            .allowlist_var("RTE_MAX_ETHPORTS")
            .allowlist_var("RTE_MBUF_DEFAULT_BUF_SIZE")
            .allowlist_var("RTE_ETH_NAME_MAX_LEN")
            // Only ever handled by pointer: their layouts (unions, cache alignment) stay C's.
            .opaque_type("rte_mbuf")
            .opaque_type("rte_mempool")
            .derive_default(true)
            .layout_tests(false)
            .generate_comments(false);
        for path in &library.include_paths {
            bindings = bindings.clang_arg(format!("-I{}", path.display()));
        }
        for flag in &extra {
            bindings = bindings.clang_arg(flag);
        }
        let bindings = bindings.generate().expect("bindgen could not read DPDK's headers");
        let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
        bindings.write_to_file(out.join("dpdk_bindings.rs")).expect("write the bindings");
    }
}
