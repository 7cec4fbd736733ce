-- Each queue's routing settings (QueueConfigured events), as JSON.
alter table qr_queues add column if not exists settings jsonb;
