//! The stack's components, one row each: what a component is (generated from upstream, ours, or
//! someone else's), where its upstream sources come from, what its ESP-IDF archive and host
//! library are called and which source paths belong to it. Configure's upstream table
//! (idf_component.yml), the `ESP_DC_COMPONENT_ID` of each component, size-check's archive names
//! and the upstream directories are read from here; the tests below hold the tables that are
//! still listed elsewhere (policy::COMPONENTS, configure::GENERATED and OURS, the lab's host
//! ids and projects, report's source paths, esp_dc_port_alloc.h's C ids) to these rows.

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
    /// The crates.io crate of upstream/Cargo.toml that carries the sources.
    // Read by the tests only until upstream::locate takes its crate names from here.
    #[cfg_attr(not(test), allow(dead_code))]
    pub crate_name: &'static str,
    /// Directory of the sources under the crate's `libdatachannel/` (`deps/<dir>`), "" for
    /// libdatachannel itself.
    pub deps_dir: &'static str,
    pub version: &'static str,
    pub licence: &'static str,
    pub url: &'static str,
    pub description: &'static str,
}

#[derive(Debug, Clone, Copy)]
pub struct Component {
    pub name: &'static str,
    /// `ESP_DC_COMPONENT_<NAME>` in components/esp_dc_port/include/esp_dc_port_alloc.h: the id
    /// the redirect passes to esp_dc_port_malloc and the host recorder attributes by (0 = other).
    pub id: u8,
    // origin, host_project and source_markers are read by the tests below, which hold the
    // tables the lab (replica::flags::PROJECTS) and report (component_of_source_path) still keep to
    // these rows; deriving those tables from here is the next step of issue 19.
    #[cfg_attr(not(test), allow(dead_code))]
    pub origin: Origin,
    pub upstream: Option<Upstream>,
    /// Stems of the archives `idf.py size-components` names (`lib<stem>.a`): ESP-IDF's
    /// `lib<component directory>.a` first, then upstream's own library names.
    pub archives: &'static [&'static str],
    /// CMake project of the lab's host build of the stack (replica::flags::PROJECTS).
    #[cfg_attr(not(test), allow(dead_code))]
    pub host_project: Option<&'static str>,
    /// Path fragments that mark a source of this component in debug info (lab and device).
    #[cfg_attr(not(test), allow(dead_code))]
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
            deps_dir: "",
            version: "0.23.2",
            licence: "MPL-2.0",
            url: "https://github.com/paullouisageneau/libdatachannel",
            description: "WebRTC data channels and media transport (C/C++)",
        }),
        archives: &["libdatachannel", "datachannel"],
        host_project: Some("libdatachannel"),
        source_markers: &["components/libdatachannel/", "libdatachannel/src/", "libdatachannel/include/"],
    },
    Component {
        name: "libjuice",
        id: 2,
        origin: Origin::Generated,
        upstream: Some(Upstream {
            crate_name: DATACHANNEL_SYS,
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
            deps_dir: "plog",
            version: "1.1.10",
            licence: "MIT",
            url: "https://github.com/SergiusTheBest/plog",
            description: "Header-only C++ logging used by libdatachannel",
        }),
        archives: &["plog"],
        host_project: None,
        source_markers: &["components/plog/", "deps/plog/"],
    },
    Component {
        name: "esp_dc_port",
        id: 6,
        origin: Origin::Ours,
        upstream: None,
        // esp_dc_init (esp_dc_port_init()) was part of esp_dc_port until it was split off to end
        // the esp_dc_port <-> libdatachannel dependency; its few bytes stay counted here.
        archives: &["esp_dc_port", "esp_dc_init"],
        host_project: None,
        source_markers: &["components/esp_dc_port/"],
    },
    Component {
        name: "mbedtls",
        id: 7,
        origin: Origin::External,
        upstream: None,
        archives: &["mbedtls", "mbedtls_2", "mbedcrypto", "mbedx509", "p256m", "everest"],
        host_project: None,
        source_markers: &["components/mbedtls/", "mbedtls/library/", "mbedtls/include/"],
    },
];

pub fn get(name: &str) -> Option<&'static Component> {
    REGISTRY.iter().find(|c| c.name == name)
}

/// The row of a component the caller knows to exist (a name from GENERATED or COMPONENTS).
pub fn known(name: &str) -> &'static Component {
    get(name).unwrap_or_else(|| unreachable!("{name} is not in components::REGISTRY"))
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

    fn names(origin: impl Fn(Origin) -> bool) -> Vec<&'static str> {
        REGISTRY.iter().filter(|c| origin(c.origin)).map(|c| c.name).collect()
    }

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
        let mut expected = vec![("OTHER".to_string(), 0)];
        expected.extend(REGISTRY.iter().map(|c| (c.name.to_uppercase(), c.id)));
        assert_eq!(defined, expected, "{}", path.display());
        for (i, c) in REGISTRY.iter().enumerate() {
            assert_eq!(usize::from(c.id), i + 1, "{}: ids follow the row order", c.name);
        }
    }

    /// The name lists other modules still keep are the registry's rows, in its order.
    #[test]
    fn component_lists_elsewhere_follow_the_registry() {
        assert_eq!(crate::policy::COMPONENTS, names(|o| o != Origin::External));
        assert_eq!(crate::policy::EXTERNAL_COMPONENTS[0], "mbedtls");
        assert_eq!(names(|o| o == Origin::External), vec!["mbedtls"]);
        assert_eq!(crate::configure::GENERATED, names(|o| o == Origin::Generated));
        for ours in names(|o| o == Origin::Ours) {
            assert!(crate::configure::OURS.contains(&ours), "{ours} is not copied by configure --into");
            assert!(project_root().join("components").join(ours).join("CMakeLists.txt").is_file());
        }
        for c in REGISTRY {
            assert_eq!(c.upstream.is_some(), c.origin == Origin::Generated, "{}", c.name);
            if c.origin != Origin::External {
                assert_eq!(crate::replica::flags::component_id(c.name), i32::from(c.id), "{}", c.name);
            }
            let project = crate::replica::flags::PROJECTS.iter().find(|(n, _)| *n == c.name).map(|(_, p)| *p);
            assert_eq!(project, c.host_project, "{}: replica::flags::PROJECTS", c.name);
            for marker in c.source_markers {
                let path = format!("/src/x/{marker}file.c");
                assert_eq!(crate::report::component_of_source_path(&path), Some(c.name), "{path}");
            }
            for stem in c.archives {
                assert_eq!(of_archive(&format!("build/esp-idf/x/lib{stem}.a")), Some(c.name));
            }
        }
        assert_eq!(of_archive("libmain.a"), None);
    }

    /// Each generated component's upstream directory exists in the pinned crate, and the pinned
    /// version is the one its own build files declare.
    #[test]
    fn upstream_rows_point_at_the_pinned_sources() {
        let sources = crate::upstream::locate().unwrap();
        for c in REGISTRY.iter().filter(|c| c.origin == Origin::Generated) {
            let up = c.upstream.unwrap();
            assert_eq!(up.crate_name, DATACHANNEL_SYS);
            let root = sources.component_root(c.name).unwrap();
            assert!(root.is_dir(), "{}: {}", c.name, root.display());
            let declared = ["CMakeLists.txt", "include/plog/Log.h", "meson.build", "configure.ac"]
                .iter()
                .filter_map(|f| std::fs::read_to_string(root.join(f)).ok())
                .any(|text| text.contains(up.version));
            assert!(declared, "{}: version {} not found in its upstream build files", c.name, up.version);
        }
    }
}
