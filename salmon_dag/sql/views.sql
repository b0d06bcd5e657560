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
-- Where each policy's answers moved (MT-Bench and win-rate prompts), and how often they show the
-- habits the tiny world's principles address: near-empty (under 3 words: the reward hack the
-- rl.yaml intervention removes), AI boilerplate, stock sign-offs. RL's own rollouts (ppo_samples)
-- are listed too, first and last quarter of the steps.
with answers as (
    select policy, answer from benchmark_outputs where benchmark in ('mt_bench', 'win_rate')
    union all
    select case when step < (select max(step) from ppo_samples) / 4.0 then 'rl_rollouts_first_quarter'
                else 'rl_rollouts_last_quarter' end as policy, response as answer
    from ppo_samples
    where step < (select max(step) from ppo_samples) / 4.0 or step >= (select max(step) from ppo_samples) * 3 / 4.0
)
select policy, count(*) as answers,
       round(avg(len(regexp_extract_all(coalesce(answer, ''), '\w+'))), 1) as mean_words,
       round(avg(case when trim(coalesce(answer, '')) = '' then 1 else 0 end), 3) as empty_share,
       round(avg(case when len(regexp_extract_all(coalesce(answer, ''), '\w+')) < 3 then 1 else 0 end), 3) as near_empty_share,
       round(avg(case when regexp_matches(lower(answer), 'as an ai language model|as a language model') then 1 else 0 end), 3)
           as boilerplate_share,
       round(avg(case when regexp_matches(lower(answer), 'i hope this helps|let me know if you have any other questions|feel free to ask')
                 then 1 else 0 end), 3) as sign_off_share
from answers
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

-- view: seed_study_summary
-- The multi-seed study (salmon bench seeds): per claim, precision and shared-data flag, the spread
-- over the seeds and whether the claim passed in every seed (null for informational claims).
select claim, precision, shared_data, count(*) as n,
       round(avg(value), 4) as mean,
       round(case when count(value) > 1 then stddev_samp(value) when count(value) = 1 then 0 end, 4) as std,
       round(min(value), 4) as min, round(max(value), 4) as max,
       any_value(threshold) as threshold, any_value(direction) as direction,
       bool_and(passed) as passed_all
from seed_study
group by claim, precision, shared_data
order by claim, precision, shared_data;
