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
