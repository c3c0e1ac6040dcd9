from aifa_workbench.model.catalogue import load_catalogue
from aifa_workbench.spawners.profiles import describe_cost, form_data, options_from_form, quick_start_profiles

SITES = load_catalogue()


def test_quick_start_profiles_cover_every_partition_of_every_site():
    profiles = quick_start_profiles(SITES)
    assert {(p.site, p.options["partition"]) for p in profiles} == {
        (s.name, part) for s in SITES.values() for part in s.partitions
    }
    titles = {p.slug: p.title for p in profiles}
    assert titles["lumi-small-g-1gcd-2h"] == "LUMI · small-g · 1 GCD · 2 h"
    assert titles["lumi-standard-g-1node-2h"] == "LUMI · standard-g · 1 node · 2 h"
    assert titles["lucia-debug-gpu-1gpu-2h"] == "Lucia · debug-gpu · 1 GPU · 2 h"


def test_cost_line():
    lumi = SITES["lumi"]
    assert describe_cost(lumi, lumi.partitions["small-g"], 2, 14, 120, 3) == "LUMI small-g, 2 GCDs, 3 h ≈ 3.0 GPU-hours"


def test_form_fields_become_options():
    assert options_from_form({"profile": ["lumi-small-g-1gcd-2h"], "gpus": ["3"]}) == {
        "profile": "lumi-small-g-1gcd-2h"
    }
    assert options_from_form(
        {"profile": ["local-gpu-1gpu-2h"], "account": ["proj_training"], "reservation": ["llm"], "gpus": ["3"]}
    ) == {"profile": "local-gpu-1gpu-2h", "account": "proj_training", "reservation": "llm"}
    assert options_from_form(
        {
            "profile": ["custom"],
            "site": ["local"],
            "partition": ["gpu"],
            "gpus": ["2"],
            "hours": ["3"],
            "reservation": [""],
            "account": ["proj_sme"],
        }
    ) == {"site": "local", "partition": "gpu", "gpus": 2, "hours": 3, "account": "proj_sme"}
    # not a number: passed on as text, so that the request parser refuses it with its sentence
    assert options_from_form({"profile": ["custom"], "gpus": ["2; id"]}) == {"gpus": "2; id"}


def test_form_data_carries_limits_the_price_rule_and_load():
    data = form_data(
        SITES,
        quick_start_profiles(SITES),
        {"local": ("proj_sme",)},
        {},
        {"local": {"gpu": {"idle_gpus": 3, "total_gpus": 8, "pending": 1}}},
    )
    gpu = data["sites"]["local"]["partitions"]["gpu"]
    assert gpu["load"] == {"idle_gpus": 3, "total_gpus": 8, "pending": 1}
    assert gpu["cost_rule"] == {"factor": 1, "terms": [{"of": "gpus", "times": 1, "per": 1, "whole": False}]}
    assert gpu["max_hours"] == 48
    assert data["sites"]["local"]["accounts"] == ["proj_sme"]


def test_cpu_partitions_are_billed_in_core_hours():
    local = SITES["local"]
    assert (
        describe_cost(local, local.partitions["cpu"], 0, 4, 8, 2) == "Local cluster cpu, 4 cores, 2 h ≈ 8.0 core-hours"
    )


def test_admin_command_prints_the_script_without_submitting(capsys, tmp_path):
    from aifa_workbench.hub_config.cli import main

    no_settings = str(tmp_path / "none.yaml")  # the spawner's defaults, every site enabled
    assert (
        main(
            [
                "render-script",
                "--settings",
                no_settings,
                "--site",
                "lumi",
                "--user",
                "alice",
                "--home",
                "/users/alicelum",
                "--options",
                '{"partition": "small-g", "gpus": 2, "hours": 3}',
            ]
        )
        == 0
    )
    out, err = capsys.readouterr()
    assert "#SBATCH --gpus-per-node=2\n#SBATCH --cpus-per-task=14\n#SBATCH --mem=120G\n" in out
    assert "LUMI small-g, 2 GCDs, 3 h ≈ 3.0 GPU-hours" in err
    assert (
        main(
            [
                "render-script",
                "--settings",
                no_settings,
                "--user",
                "alice",
                "--options",
                '{"partition": "small-g\\n#SBATCH --qos=x"}',
            ]
        )
        == 2
    )
    assert "'partition' must be one of" in capsys.readouterr().err


def test_admin_command_lists_profiles_with_their_cost(capsys):
    from aifa_workbench.hub_config.cli import main

    assert main(["profiles"]) == 0
    out = capsys.readouterr().out
    assert "lumi-small-g-1gcd-2h" in out and "LUMI small-g, 1 GCD, 2 h ≈ 1.0 GPU-hours" in out
    assert "Local cluster cpu, 1 core, 2 h ≈ 2.0 core-hours" in out


def test_a_refusal_names_the_forms_field_and_keeps_what_was_sent():
    from aifa_workbench.model.request import RequestError
    from aifa_workbench.spawners.profiles import FORM_LABELS, refused_form

    error = RequestError("'gpus' must be from 1 to 8; 99 is out of range.", "gpus")
    assert str(error.naming(FORM_LABELS)) == "GPUs must be from 1 to 8; 99 is out of range."
    assert str(RequestError("'x' is odd", "x").naming(FORM_LABELS)) == "'x' is odd"
    kept = refused_form(
        {
            "profile": "custom",
            "site": "local",
            "gpus": 99,
            "hours": True,
            "cmd": "id",
            "account": "p" * 500,
            "cpus": [1],
        },
        "gpus",
    )
    assert kept == {"values": {"profile": "custom", "site": "local", "gpus": 99, "account": "p" * 64}, "field": "gpus"}
    assert refused_form("junk", "cmd") == {"values": {}, "field": None}


def test_each_partition_is_costed_in_its_own_unit_with_a_hint_where_the_rule_is_not_obvious():
    from aifa_workbench.model.catalogue import load_catalogue
    from aifa_workbench.model.cost import cost_hint, cost_unit

    sites = load_catalogue()
    local, lumi = sites["local"], sites["lumi"]
    assert cost_unit(local.partitions["booster"]) == "node-hours"  # whole nodes, not GPU-hours
    assert (
        describe_cost(local, local.partitions["booster"], 4, 64, 480, 2)
        == "Local cluster booster, 1 node, 2 h ≈ 2.0 node-hours"
    )
    # JUPITER: JSC grants and reports core-hours, 288 to a node-hour
    jupiter = sites["jupiter"]
    assert cost_unit(jupiter.partitions["booster"]) == "core-hours"
    assert describe_cost(jupiter, jupiter.partitions["booster"], 4, 288, 480, 2).endswith("≈ 576.0 core-hours")
    assert "one node-hour is 288 core-hours" in cost_hint(jupiter, jupiter.partitions["booster"])
    assert cost_unit(sites["lucia"].partitions["gpu"]) == "billing-unit hours"
    assert "one GCD is 0.5 GPU-hour per hour" in cost_hint(lumi, lumi.partitions["small-g"])
    assert cost_hint(local, local.partitions["gpu"]) == ""
    # LUMI's whole nodes are charged in LUMI's own unit: 4 GPU-hours per node-hour
    standard_g = lumi.partitions["standard-g"]
    assert describe_cost(lumi, standard_g, 8, 56, 480, 2) == "LUMI standard-g, 1 node, 2 h ≈ 8.0 GPU-hours"
    assert "one node-hour is 4 GPU-hours" in cost_hint(lumi, standard_g)


def test_quick_start_cards_say_what_for_on_what_and_at_what_cost():
    from aifa_workbench.model.catalogue import load_catalogue
    from aifa_workbench.spawners.profiles import profile_card, quick_start_profiles

    sites = load_catalogue()
    cards = {p.slug: profile_card(sites[p.site], p) for p in quick_start_profiles(sites)}
    small_g = cards["lumi-small-g-1gcd-2h"]
    assert small_g["purpose"] == "Try a model on one GPU" and small_g["hardware"].startswith("AMD MI250X")
    assert small_g["what"] == "1 GCD, 7 cores, 60 GB, 2 h" and small_g["cost"] == "≈ 1.0 GPU-hours"
    assert cards["local-cpu-1core-2h"]["what"] == "1 core, 2 GB, 2 h"
    assert cards["jupiter-booster-1node-2h"]["cost"] == "≈ 576.0 core-hours"
