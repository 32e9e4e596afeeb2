"""``fsm-cluster submit -f train.yaml``: one OCI Data Science job + one run per node."""

from __future__ import annotations

import argparse
import os

EPILOG = """examples:
  fsm-cluster submit -f train.yaml --dry-run       print the job and every run, create nothing
  fsm-cluster submit -f train.yaml                 create the job, MAIN's run, then the others
  fsm-cluster submit -f train.yaml --watch         ... and follow the runs until they end
  OCI_IAM_TYPE=security_token fsm-cluster submit -f train.yaml --profile my-session

Auth: --auth (or OCI_IAM_TYPE) api_key (default on a laptop), security_token, resource_principal,
instance_principal; the config file and profile come from --oci-config / OCI_CONFIG_LOCATION and
--profile / OCI_CONFIG_PROFILE. ${VAR} placeholders in the spec resolve from this environment.
Specs are read as oracle-ads reads them: an unknown key is ignored and a repeated key takes its
last value, each with a warning naming its line (--strict: errors). image: "@image" is resolved
from ./config.ini ([main] registry and tag, written by `ads opctl distributed-training
build-image`); --image overrides the spec's image; a dry run without config.ini plans with a
visible placeholder.
More than 64 nodes (one job run, a billed VM, each) need --max-nodes N, the dry run too.
Exit code: 0 submitted (with --watch: MAIN succeeded), 1 a creation failed or the cluster failed,
2 a problem in the spec or the options."""


def register(sub) -> None:
    from ._spec import add_strict_option

    p = sub.add_parser("submit", help="create an OCI Data Science job and one run per node",
                       description="Turn a cluster spec into one OCI Data Science job (the "
                                   "cluster-wide environment) and one job run per node.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-f", "--file", required=True, metavar="SPEC", help="cluster spec (YAML)")
    p.add_argument("--dry-run", action="store_true", help="print the job and every run; no network")
    p.add_argument("--image", metavar="IMAGE",
                   help="the nodes' container image, instead of the spec's spec.cluster.spec.image "
                        "(default: the spec's; oracle-ads' \"@image\" is <registry>:<tag> from the "
                        "[main] section of ./config.ini, as `ads opctl` reads it)")
    add_strict_option(p)
    p.add_argument("--watch", action="store_true",
                   help="follow the runs' states until they end; a WORKER/PS run lost while MAIN's "
                        "goes on is replaced when MAIN records a restart waiting for it")
    p.add_argument("--interval", type=float, default=15.0, help="--watch: seconds between polls (15)")
    p.add_argument("--max-nodes", type=int, metavar="N",
                   help="the most nodes (MAIN + WORKERs + PS: one job run, a billed VM, each) this submit may "
                        "create, dry run included (default 64: a larger spec is refused unless told)")
    p.add_argument("--auth", choices=["api_key", "resource_principal", "instance_principal",
                                      "security_token"],
                   help="OCI authentication (default: OCI_IAM_TYPE, else api_key)")
    p.add_argument("--profile", help="OCI config profile (default: OCI_CONFIG_PROFILE, else DEFAULT)")
    p.add_argument("--oci-config", metavar="PATH",
                   help="OCI config file (default: OCI_CONFIG_LOCATION, else ~/.oci/config)")
    p.add_argument("--endpoint", metavar="URL", help="Data Science API endpoint (default: the region's)")
    p.set_defaults(handler=handle)


def handle(args) -> int:
    import yaml

    from ..errors import FsmClusterError
    from ..launch.oci import dry_run_document, plan, submit, watch
    from ..spec.images import ImageChoice
    from ..spec.loading import load_spec
    from ._spec import reading

    if args.interval <= 0:
        raise FsmClusterError("--interval must be positive")
    if args.max_nodes is not None and args.max_nodes < 1:
        raise FsmClusterError(f"--max-nodes must be 1 or more (got {args.max_nodes})")
    if args.image is not None and (not args.image.strip() or args.image.startswith("@")):
        raise FsmClusterError(f"--image {args.image!r}: expected an image's registry URI "
                              "(region.ocir.io/tenancy/repo:tag)")
    image = ImageChoice(override=args.image, placeholder=args.dry_run)
    p = plan(load_spec(args.file, image=image, **reading(args, "submit")), args.max_nodes)
    if args.dry_run:
        print("# dry run: nothing is created")
        print(yaml.safe_dump(dry_run_document(p), sort_keys=False, width=1000), end="")
        return 0
    auth = oci_auth(args)
    client = data_science_client(args, auth)
    submitted = submit(p, client)
    print(f"follow it with: fsm-cluster status {submitted.cluster_dir} --watch")
    if args.watch:
        from ..runtime.oci_auth import storage_options

        # the work dir is read for MAIN's restart records (a lost node's replacement)
        return watch(client, submitted, interval=args.interval,
                     storage_options=storage_options(submitted.work_dir, auth))
    return 0


def oci_auth(args) -> dict:
    from ..env import OCI_CONFIG_LOCATION, OCI_IAM_TYPE, config_profile
    from ..runtime.oci_auth import get_oci_auth

    return get_oci_auth(args.auth or os.environ.get(OCI_IAM_TYPE) or "api_key",
                        args.profile or config_profile(os.environ),
                        args.oci_config or os.environ.get(OCI_CONFIG_LOCATION, ""))


def data_science_client(args, auth: dict | None = None):
    import oci

    from ..runtime.oci_auth import make_client

    auth = dict(oci_auth(args) if auth is None else auth)
    if args.endpoint:
        auth["service_endpoint"] = args.endpoint
    return make_client(oci.data_science.DataScienceClient, auth)
