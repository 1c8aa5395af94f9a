"""The model port: which embedding model families omnibind can load, and how each one
prepares, embeds and labels its vectors (docs/model.md, "Choosing the commercial family").

Torch-free here: `catalog` (names, licences), `preprocessing` (cpu-side arrays),
`perception_files` (finding and downloading PE-AV files). Torch only in `loader`,
`imagebind` and `perception`, which only a gpu worker imports."""
