"""Validates Kubernetes objects (YAML documents on stdin) strictly.

Built-in kinds go to kubernetes-validate (the Kubernetes OpenAPI schemas,
strict: unknown fields fail). Istio kinds are checked against the CRD
schemas in tests/data/istio-crds.yaml, made strict the way the API server's
strict field validation is: an object schema that lists its properties and
does not preserve unknown fields refuses any other field.

Prints `ok KIND/NAME` or `invalid KIND/NAME: WHY` per object; exits 1 when
any object is invalid.

    python validate_k8s.py [--kubernetes 1.33.0] < objects.yaml
"""

import argparse
import copy
import pathlib
import sys

import jsonschema
import kubernetes_validate
import yaml

CRDS = pathlib.Path(__file__).resolve().parent.parent / "data" / "istio-crds.yaml"


def strict(schema):
    """A copy of `schema` refusing fields it does not list."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, list):
            for item in node:
                walk(item)
            return
        if not isinstance(node, dict):
            return
        if (
            "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            node["additionalProperties"] = False
        for key, value in node.items():
            if key == "properties":
                for sub in value.values():
                    walk(sub)
            elif key in ("items", "additionalProperties", "not"):
                walk(value)
            elif key in ("oneOf", "anyOf", "allOf"):
                walk(value)

    walk(schema)
    return schema


def crd_schemas():
    schemas = {}
    for crd in yaml.safe_load_all(CRDS.read_text()):
        if not crd:
            continue
        group = crd["spec"]["group"]
        kind = crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
            # The type meta every object has; metadata is the API server's
            # to check.
            schema["properties"].update(
                apiVersion={"type": "string"},
                kind={"type": "string"},
                metadata={"type": "object"},
            )
            schemas[(f"{group}/{version['name']}", kind)] = strict(schema)
    return schemas


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--kubernetes", default="1.33.0")
    args = parser.parse_args()
    schemas = crd_schemas()
    invalid = 0
    for obj in yaml.safe_load_all(sys.stdin.read()):
        if not obj:
            continue
        name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
        key = (obj.get("apiVersion"), obj.get("kind"))
        try:
            if key in schemas:
                jsonschema.validate(obj, schemas[key])
            elif "istio.io" in str(key[0]):
                raise ValueError(f"no schema for {key}")
            else:
                kubernetes_validate.validate(obj, args.kubernetes, strict=True)
            print(f"ok {name}")
        except (jsonschema.ValidationError, kubernetes_validate.ValidationError) as e:
            invalid += 1
            where = "/".join(str(p) for p in getattr(e, "path", []))
            print(f"invalid {name}: {where}: {getattr(e, 'message', e)}")
        except Exception as e:  # an unknown kind or version is a failure too
            invalid += 1
            print(f"invalid {name}: {e}")
    sys.exit(1 if invalid else 0)


if __name__ == "__main__":
    main()
