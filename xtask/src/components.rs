//! The stack's components, one row each: what a component is (generated from upstream, ours, or
//! someone else's), where its upstream sources come from, what its ESP-IDF archive and host
//! library are called and which source paths belong to it. Every list of components is read
//! from here: the policy's components and the budgets' names, configure's generated and own
//! components and upstream table (idf_component.yml), the `ESP_DC_COMPONENT_ID` of each
//! component, the replica's CMake projects, the pinned crates upstream::locate resolves,
//! size-check's archive names and the source paths the lab and `analyze` attribute by.
//!
//! esp_dc_port_alloc.h's C ids are checked against the rows by a test rather than generated: the
//! header is committed source that ESP-IDF builds without running xtask (menuconfig, a plain
//! `idf.py build`), so a generated header would either be committed anyway or missing there.

/// Where a component's code comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `configure` lays it out from the pinned upstream crate (`components/<name>/`, git-ignored).
    Generated,
    /// Committed in `components/<name>/`.
    Ours,
    /// Not laid out by us: ESP-IDF's mbedTLS; the lab attributes memory to it all the same.
    External,
}

/// Upstream facts idf_component.yml carries, and where the sources are in the pinned crate.
#[derive(Debug, Clone, Copy)]
pub struct Upstream {
    /// The crates.io crate of upstream/Cargo.toml that carries the sources (its version is pinned
    /// there, and only there).
    pub crate_name: &'static str,
    /// Directory of the upstream project in the crate (`libdatachannel`, `mbedtls`).
    pub crate_dir: &'static str,
    /// Directory of the sources under the crate's `libdatachannel/` (`deps/<dir>`), "" for
    /// libdatachannel itself and for a project of its own crate.
    pub deps_dir: &'static str,
    /// The upstream project's own version, as its build files declare it (idf_component.yml).
    pub version: &'static str,
    pub licence: &'static str,
    pub url: &'static str,
    pub description: &'static str,
}

#[derive(Debug, Clone, Copy)]
pub struct Component {
    pub name: &'static str,
    /// `ESP_DC_COMPONENT_<NAME>` in components/esp_dc_port/include/esp_dc_port_alloc.h: the id
    /// the redirect passes to esp_dc_port_malloc and the host recorder attributes by. 0 (the
    /// header's OTHER): the component allocates nothing of its own, so the policy places nothing
    /// of it and the lab has no column for it.
    pub id: u8,
    pub origin: Origin,
    pub upstream: Option<Upstream>,
    /// Stems of the archives `idf.py size-components` names (`lib<stem>.a`): ESP-IDF's
    /// `lib<component directory>.a` first, then upstream's own library names.
    pub archives: &'static [&'static str],
    /// CMake project of the lab's host build of the stack (replica::flags::host_projects).
    pub host_project: Option<&'static str>,
    /// Path fragments that mark a source of this component in debug info (lab and device); where
    /// a path holds markers of two components, the one further right (the inner directory) wins.
    pub source_markers: &'static [&'static str],
}

const DATACHANNEL_SYS: &str = "datachannel-sys";

/// Every component, in id order.
pub const REGISTRY: &[Component] = &[
    Component {
        name: "libdatachannel",
        id: 1,
        origin: Origin::Generated,
        upstream: Some(Upstream {
            crate_name: DATACHANNEL_SYS,
            crate_dir: "libdatachannel",
            deps_dir: "",
            version: "0.23.2",
            licence: "MPL-2.0",
            url: "https://github.com/paullouisageneau/libdatachannel",
            description: "WebRTC data channels and media transport (C/C++)",
        }),
        archives: &["libdatachannel", "datachannel"],
        host_project: Some("libdatachannel"),
        // The replica's staged copy is ~/.cache/esp-dc/host/<policy>/stack-src.
        source_markers: &[
            "components/libdatachannel/",
            "libdatachannel/src/",
            "libdatachannel/include/",
            "/stack-src/src/",
            "/stack-src/include/",
        ],
    },
    Component {
        name: "libjuice",
        id: 2,
        origin: Origin::Generated,
        upstream: Some(Upstream {
            crate_name: DATACHANNEL_SYS,
            crate_dir: "libdatachannel",
            deps_dir: "libjuice",
            version: "1.6.1",
            licence: "MPL-2.0",
            url: "https://github.com/paullouisageneau/libjuice",
            description: "ICE (RFC 8445) for libdatachannel",
        }),
        archives: &["libjuice", "juice"],
        host_project: Some("libjuice"),
        source_markers: &["components/libjuice/", "deps/libjuice/"],
    },
    Component {
        name: "usrsctp",
        id: 3,
        origin: Origin::Generated,
        upstream: Some(Upstream {
            crate_name: DATACHANNEL_SYS,
            crate_dir: "libdatachannel",
            deps_dir: "usrsctp",
            version: "0.9.5.0",
            licence: "BSD-3-Clause",
            url: "https://github.com/sctplab/usrsctp",
            description: "Userland SCTP stack carrying WebRTC data channels",
        }),
        archives: &["usrsctp"],
        host_project: Some("usrsctplib"),
        source_markers: &["components/usrsctp/", "deps/usrsctp/"],
    },
    Component {
        name: "libsrtp",
        id: 4,
        origin: Origin::Generated,
        upstream: Some(Upstream {
            crate_name: DATACHANNEL_SYS,
            crate_dir: "libdatachannel",
            deps_dir: "libsrtp",
            version: "2.7.0",
            licence: "BSD-3-Clause",
            url: "https://github.com/cisco/libsrtp",
            description: "SRTP for WebRTC media, mbedTLS crypto engine",
        }),
        archives: &["libsrtp", "srtp2"],
        host_project: Some("libsrtp2"),
        source_markers: &["components/libsrtp/", "deps/libsrtp/"],
    },
    Component {
        name: "plog",
        id: 5,
        origin: Origin::Generated,
        upstream: Some(Upstream {
            crate_name: DATACHANNEL_SYS,
            crate_dir: "libdatachannel",
            deps_dir: "plog",
            version: "1.1.10",
            licence: "MIT",
            url: "https://github.com/SergiusTheBest/plog",
            description: "Header-only C++ logging used by libdatachannel",
        }),
        archives: &["plog"],
        host_project: None,
        source_markers: &["components/plog/", "deps/plog/", "/plog/include/plog/"],
    },
    Component {
        name: "esp_dc_port",
        id: 6,
        origin: Origin::Ours,
        upstream: None,
        archives: &["esp_dc_port"],
        host_project: None,
        source_markers: &["components/esp_dc_port/"],
    },
    Component {
        // esp_dc_port_init(): its source allocates nothing. What it causes is counted where it
        // happens: the esp_pthread_cfg_t copy esp_pthread_set_cfg mallocs once per calling task
        // (ESP-IDF's pthread.c; `analyze` names esp_dc_init as its innermost stack frame) and
        // libdatachannel's global SCTP settings.
        name: "esp_dc_init",
        id: 0,
        origin: Origin::Ours,
        upstream: None,
        archives: &["esp_dc_init"],
        host_project: None,
        source_markers: &["components/esp_dc_init/"],
    },
    Component {
        name: "mbedtls",
        id: 7,
        origin: Origin::External,
        // ESP-IDF's own copy on the device; the replica builds this crate's, the same release.
        upstream: Some(Upstream {
            crate_name: "mbedtls-rs-sys",
            crate_dir: "mbedtls",
            deps_dir: "",
            version: "3.6.5",
            licence: "Apache-2.0",
            url: "https://github.com/Mbed-TLS/mbedtls",
            description: "TLS and DTLS; ESP-IDF's mbedtls component on the device",
        }),
        archives: &["mbedtls", "mbedtls_2", "mbedcrypto", "mbedx509", "p256m", "everest"],
        host_project: None,
        // The replica's staged copy is ~/.cache/esp-dc/host/<policy>/mbedtls-src.
        source_markers: &["components/mbedtls/", "mbedtls/library/", "mbedtls/include/", "/mbedtls-src/"],
    },
    Component {
        // The C++ runtime of the toolchain: the lab attributes the memory its own code allocates
        // (exception objects, iostream buffers) and budgets may name it.
        name: "libstdc++",
        id: 0,
        origin: Origin::External,
        upstream: None,
        archives: &[],
        host_project: None,
        source_markers: &[],
    },
];

pub fn get(name: &str) -> Option<&'static Component> {
    REGISTRY.iter().find(|c| c.name == name)
}

/// The row of a component the caller knows to exist (a name from one of the lists below).
pub fn known(name: &str) -> &'static Component {
    get(name).unwrap_or_else(|| unreachable!("{name} is not in components::REGISTRY"))
}

fn names(keep: impl Fn(&Component) -> bool) -> Vec<&'static str> {
    REGISTRY.iter().filter(|c| keep(c)).map(|c| c.name).collect()
}

/// The components the policy places (`[components.<name>]`, one each) and the lab has a column
/// for: laid out by configure and allocating on their own (an id), in id order.
pub fn placed() -> Vec<&'static str> {
    names(is_placed)
}

fn is_placed(c: &Component) -> bool {
    c.origin != Origin::External && c.id != 0
}

/// The placed component a recorder or redirect id stands for.
pub fn placed_by_id(id: i64) -> Option<&'static str> {
    REGISTRY.iter().find(|c| is_placed(c) && i64::from(c.id) == id).map(|c| c.name)
}

/// The stack's components the lab counts, in report order: every one with an allocation id.
pub fn counted() -> Vec<&'static str> {
    names(|c| c.id != 0)
}

/// Laid out by configure from the pinned upstream sources.
pub fn generated() -> Vec<&'static str> {
    names(|c| c.origin == Origin::Generated)
}

/// Ours, committed in components/ and copied by configure --into.
pub fn ours() -> Vec<&'static str> {
    names(|c| c.origin == Origin::Ours)
}

/// Not laid out by us, but the lab attributes memory to them and budgets may name them.
pub fn external() -> Vec<&'static str> {
    names(|c| c.origin == Origin::External)
}

/// The host build's CMake projects: each component built as its own project, with its row.
pub fn host_projects() -> impl Iterator<Item = (&'static Component, &'static str)> {
    REGISTRY.iter().filter_map(|c| Some((c, c.host_project?)))
}

/// The component a source file belongs to, from its path as debug info records it: the row whose
/// marker stands furthest right, so `…/libdatachannel/deps/libjuice/…` is libjuice's.
pub fn of_source_path(path: &str) -> Option<&'static str> {
    let p = path.replace('\\', "/");
    REGISTRY
        .iter()
        .flat_map(|c| c.source_markers.iter().filter_map(|m| Some((p.rfind(m)?, c.name))))
        .max_by_key(|(at, _)| *at)
        .map(|(_, name)| name)
}

/// The component an archive of `idf.py size-components` stands for (`lib<stem>.a`, any directory).
pub fn of_archive(archive: &str) -> Option<&'static str> {
    let file = archive.rsplit('/').next().unwrap_or(archive);
    let stem = file.strip_prefix("lib")?.strip_suffix(".a")?;
    REGISTRY.iter().find(|c| c.archives.contains(&stem)).map(|c| c.name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsutil::project_root;

    /// esp_dc_port_alloc.h's `#define ESP_DC_COMPONENT_<NAME> <id>` lines are exactly the rows'
    /// ids (plus OTHER = 0): a C id added, removed or renumbered on either side fails here.
    #[test]
    fn alloc_header_ids_are_the_registry_ids() {
        let path = project_root().join("components/esp_dc_port/include/esp_dc_port_alloc.h");
        let header = std::fs::read_to_string(&path).unwrap();
        let defined: Vec<(String, u8)> = header
            .lines()
            .filter_map(|l| l.strip_prefix("#define ESP_DC_COMPONENT_"))
            .map(|rest| {
                let (name, id) = rest.split_once(' ').unwrap();
                (name.to_string(), id.trim().parse().unwrap())
            })
            .collect();
        let with_id: Vec<&Component> = REGISTRY.iter().filter(|c| c.id != 0).collect();
        let mut expected = vec![("OTHER".to_string(), 0)];
        expected.extend(with_id.iter().map(|c| (c.name.to_uppercase(), c.id)));
        assert_eq!(defined, expected, "{}", path.display());
        for (i, c) in with_id.iter().enumerate() {
            assert_eq!(usize::from(c.id), i + 1, "{}: ids follow the row order", c.name);
        }
        assert_eq!(counted(), with_id.iter().map(|c| c.name).collect::<Vec<_>>());
    }

    /// Each row's facts hold where they are used: ours are committed components, every source
    /// marker and archive name leads back to its own row, and the policies place exactly the
    /// placed ones.
    #[test]
    fn rows_hold_where_they_are_used() {
        for ours in ours() {
            assert!(project_root().join("components").join(ours).join("CMakeLists.txt").is_file(), "{ours}");
        }
        for c in REGISTRY {
            if c.origin == Origin::Generated {
                assert!(c.upstream.is_some(), "{}: a generated component needs its upstream", c.name);
            }
            for marker in c.source_markers {
                let path = format!("/src/x/{marker}file.c");
                assert_eq!(of_source_path(&path), Some(c.name), "{path}");
            }
            for stem in c.archives {
                assert_eq!(of_archive(&format!("build/esp-idf/x/lib{stem}.a")), Some(c.name));
            }
        }
        assert_eq!(of_archive("libmain.a"), None);
        assert_eq!(placed(), ["libdatachannel", "libjuice", "usrsctp", "libsrtp", "plog", "esp_dc_port"]);
        assert_eq!(placed_by_id(6), Some("esp_dc_port"));
        assert_eq!(placed_by_id(7), None, "mbedtls is counted, not placed");
        for name in ["lean", "stock"] {
            let policy = crate::policy::Policy::load(&crate::policy::Policy::path_for(name)).unwrap();
            assert_eq!(policy.components.len(), placed().len(), "{name}");
            assert!(placed().iter().all(|c| policy.components.contains_key(*c)), "{name}");
        }
    }

    /// Each upstream directory exists in the pinned crate, the pinned version is the one its own
    /// build files declare, and each host project is a project() its CMakeLists.txt declares.
    #[test]
    fn upstream_rows_point_at_the_pinned_sources() {
        let sources = crate::upstream::locate().unwrap();
        for c in REGISTRY {
            let Some(up) = c.upstream else { continue };
            let root = match c.origin {
                Origin::Generated => sources.component_root(c.name).unwrap(),
                _ => sources.mbedtls.clone(),
            };
            assert!(root.is_dir(), "{}: {}", c.name, root.display());
            let declared = ["CMakeLists.txt", "include/plog/Log.h", "meson.build", "configure.ac"]
                .iter()
                .filter_map(|f| std::fs::read_to_string(root.join(f)).ok())
                .any(|text| text.contains(up.version));
            assert!(declared, "{}: version {} not found in its upstream build files", c.name, up.version);
            if let Some(project) = c.host_project {
                let cmake = std::fs::read_to_string(root.join("CMakeLists.txt")).unwrap();
                let declared = cmake.lines().filter_map(|l| l.trim_start().strip_prefix("project")).any(|rest| {
                    rest.trim_start().strip_prefix('(').and_then(|r| r.split_whitespace().next()) == Some(project)
                });
                assert!(declared, "{}: no project({project} …) in its CMakeLists.txt", c.name);
            }
        }
    }
}
