"""The SBOM read by an independent implementation: cyclonedx-python-lib's
strict JSON validator (CycloneDX 1.5) and its deserializer. Run by
tests/image_build.rs from target/python/sbom-check; prints what it read as JSON."""
import json
import sys

from cyclonedx.model.bom import Bom
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

text = open(sys.argv[1], encoding="utf-8").read()
error = JsonStrictValidator(SchemaVersion.V1_5).validate_str(text)
if error is not None:
    print(f"not valid CycloneDX 1.5: {error}", file=sys.stderr)
    sys.exit(1)
bom = Bom.from_json(json.loads(text))
root = bom.metadata.component
print(json.dumps({
    "root": f"{root.name}@{root.version}",
    "root_sha256": [h.content for h in root.hashes],
    "packages": sorted(f"{c.name}@{c.version}" for c in bom.components),
    "dependencies": len(bom.dependencies),
}))
