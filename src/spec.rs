//! The choices that shape a conversion, as one type: the command line parses it (clap), saved
//! plans record it (serde), and later fleet manifests reuse it.

use serde::{Deserialize, Serialize};

/// Where the root filesystem goes on the HVM disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum LayoutKind {
    /// The filesystem stays where it is: boot.img in sector 0, core.img in the post-MBR gap
    /// or in the filesystem's reserved boot-loader inode. The result is the source plus a
    /// small delta.
    InPlace,
    /// One bootable Linux partition at 1 MiB; core.img in the gap after the MBR.
    Mbr,
    /// Root as partition 1 at 2 MiB and a BIOS boot partition (2) at 1 MiB for core.img.
    Gpt,
}

impl std::fmt::Display for LayoutKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LayoutKind::InPlace => "in-place",
            LayoutKind::Mbr => "mbr",
            LayoutKind::Gpt => "gpt",
        })
    }
}

/// The instance families to prepare drivers for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// Both Xen HVM and Nitro.
    Auto,
    Nitro,
    Xen,
}

impl Target {
    /// True when the target includes Nitro instance types.
    pub fn nitro(self) -> bool {
        self != Target::Xen
    }
    /// True when the target includes Xen HVM instance types.
    pub fn xen(self) -> bool {
        self != Target::Nitro
    }
}

/// How injected drivers get into an initramfs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum InitramfsMode {
    /// Keep the original bytes and append one small archive with the modules, the module
    /// indexes and the load lists: the kernel unpacks it last, so its files win.
    #[default]
    Append,
    /// Unpack, add the modules and recompress the whole initramfs.
    Rebuild,
}

/// What a conversion does, independent of where the blocks live.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
pub struct ConvertSpec {
    /// Layout of the HVM disk: in-place keeps the filesystem where it is; mbr and gpt move it
    /// into a new partition 1.
    #[arg(long, value_enum, default_value_t = LayoutKind::InPlace)]
    pub layout: LayoutKind,
    /// Disk size in GiB (default: in-place, the source's size; mbr/gpt, the source rounded up
    /// to whole GiB, plus 1). In place, a disk can only grow.
    #[arg(long = "size", value_name = "GiB")]
    pub size_gib: Option<u64>,
    /// Instance families to prepare drivers for: auto (Xen HVM and Nitro), nitro or xen.
    #[arg(long, value_enum, default_value_t = Target::Auto)]
    pub target: Target,
    /// Inject drivers into every kernel of the bootloader config, not only the default.
    #[arg(long)]
    #[serde(default)]
    pub all_kernels: bool,
    /// Do not touch any initramfs (no driver injection).
    #[arg(long, conflicts_with = "all_kernels")]
    #[serde(default)]
    pub keep_initramfs: bool,
    /// How drivers get into the initramfs: append an archive (default) or rebuild it whole.
    #[arg(long = "initramfs", value_enum, default_value_t = InitramfsMode::Append, conflicts_with = "keep_initramfs")]
    #[serde(default)]
    pub initramfs: InitramfsMode,
}

impl Default for ConvertSpec {
    fn default() -> Self {
        ConvertSpec {
            layout: LayoutKind::InPlace,
            size_gib: None,
            target: Target::Auto,
            all_kernels: false,
            keep_initramfs: false,
            initramfs: InitramfsMode::Append,
        }
    }
}

impl ConvertSpec {
    /// The spec with its layout replaced.
    pub fn with_layout(layout: LayoutKind) -> Self {
        ConvertSpec { layout, ..Self::default() }
    }

    /// The size of the HVM disk for a source of `source_len` bytes.
    pub fn disk_size(&self, source_len: u64) -> u64 {
        const GIB: u64 = 1 << 30;
        match (self.size_gib, self.layout) {
            (Some(g), _) => g * GIB,
            (None, LayoutKind::InPlace) => source_len,
            (None, _) => source_len.div_ceil(GIB) * GIB + GIB,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_round_trips_through_json_in_the_plan_form() {
        let spec = ConvertSpec { size_gib: Some(3), target: Target::Nitro, ..ConvertSpec::default() };
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"layout": "in-place", "size_gib": 3, "target": "nitro", "all_kernels": false, "keep_initramfs": false, "initramfs": "append"})
        );
        assert_eq!(serde_json::from_value::<ConvertSpec>(json).unwrap(), spec);
    }

    #[test]
    fn disk_sizes_by_layout() {
        let len = (2 << 30) + 4096;
        assert_eq!(ConvertSpec::with_layout(LayoutKind::InPlace).disk_size(len), len);
        assert_eq!(ConvertSpec::with_layout(LayoutKind::Mbr).disk_size(len), 4 << 30);
        let grown = ConvertSpec { size_gib: Some(5), ..ConvertSpec::default() };
        assert_eq!(grown.disk_size(len), 5 << 30);
    }

    #[test]
    fn unknown_values_are_refused() {
        let bad = serde_json::json!({"layout": "lvm", "target": "auto"});
        assert!(serde_json::from_value::<ConvertSpec>(bad).is_err());
    }
}
