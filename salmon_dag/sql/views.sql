-- Derived DuckDB views over the warehouse tables. Each view starts with a "-- view: NAME" line;
-- a view whose input tables are not materialized yet is simply left out until they are.

-- view: principles
-- All principles and exemplars of the three principle files in one table.
select * from principles_self_align
union all by name select * from principles_reward_model
union all by name select * from principles_rl;

-- view: prompt_pool_summary
-- Prompt counts by question type, split and language.
select question_type, split, language, count(*) as n
from prompt_pool
group by all
order by question_type, split, n desc;

-- view: rm_probes
-- How the reward model follows principles: held-out accuracy, negation flips, verifiable probes.
select metric, round(value, 3) as value, n
from reward_model_eval
order by metric;

-- view: rl_gain
-- RL's headline metrics, mean of the first vs the last quarter of the rollout steps.
with s as (
    select metric, value,
           row_number() over (partition by metric order by step) - 1 as i,
           count(*) over (partition by metric) as n
    from ppo_steps
    where metric in ('objective/rm_score', 'objective/reward', 'objective/response_tokens', 'objective/kl')
)
select metric,
       round(avg(value) filter (where i < greatest(1, n // 4)), 3) as first_quarter,
       round(avg(value) filter (where i >= n - greatest(1, n // 4)), 3) as last_quarter,
       round(last_quarter - first_quarter, 3) as change
from s
group by metric
order by metric;

-- view: policy_answers
-- Where each policy's answers moved: their length and how many are empty (MT-Bench and win-rate prompts).
select policy, count(*) as answers,
       round(avg(case when trim(answer) = '' then 0
                      else len(string_split(regexp_replace(trim(answer), '\s+', ' ', 'g'), ' ')) end), 1) as mean_words,
       round(avg(case when trim(answer) = '' then 1 else 0 end), 3) as empty_share
from benchmark_outputs
where benchmark in ('mt_bench', 'win_rate')
group by policy
order by policy;

-- view: benchmark_table
-- Every benchmark's metrics, one column per policy (the reward model's agreement with humans under rm).
select benchmark, metric,
       round(max(value) filter (where policy = 'base_model'), 3) as base,
       round(max(value) filter (where policy = 'sft_model'), 3) as sft,
       round(max(value) filter (where policy = 'ppo_policy'), 3) as rl,
       round(max(value) filter (where policy = 'reward_model'), 3) as rm,
       max(n) as n
from benchmark_scores
group by all
order by all;
