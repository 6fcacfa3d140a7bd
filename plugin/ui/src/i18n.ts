/**
 * English and Chinese text. The language follows `?lang=`, then the choice saved by the switch, then the
 * browser's language. Each entry holds both texts, so a missing translation shows up where it is written.
 */
const TEXT = {
  title: ['lora-scripts', 'lora-scripts'],
  tab_generate: ['Generate', '生成'],
  tab_datasets: ['Datasets', '数据集'],
  tab_train: ['Train', '训练'],
  tab_models: ['Models', '模型'],
  language: ['Language', '语言'],
  login_title: ['Sign in', '登录'],
  login_help: ['This server was started with --api-auth. Enter one of its user:password pairs.', '此服务器启用了 --api-auth，请输入用户名和密码。'],
  username: ['User', '用户名'],
  password: ['Password', '密码'],
  sign_in: ['Sign in', '登录'],
  wrong_credentials: ['Wrong user name or password.', '用户名或密码错误。'],
  prompt: ['Prompt', '提示词'],
  negative_prompt: ['Negative prompt', '反向提示词'],
  generate: ['Generate', '生成'],
  interrupt: ['Interrupt', '中断'],
  skip: ['Skip', '跳过'],
  interrupted: ['Interrupted', '已中断'],
  sampler: ['Sampler', '采样器'],
  schedule: ['Schedule type', '调度类型'],
  steps: ['Steps', '步数'],
  cfg: ['CFG scale', 'CFG 系数'],
  seed: ['Seed', '种子'],
  reuse_seed: ['Reuse the last seed', '复用上次种子'],
  random_seed: ['Random seed', '随机种子'],
  width: ['Width', '宽度'],
  height: ['Height', '高度'],
  batch_size: ['Batch size', '每批数量'],
  batch_count: ['Batch count', '批次数'],
  hires: ['Hires. fix', '高清修复'],
  hr_scale: ['Upscale by', '放大倍数'],
  hr_steps: ['Hires steps', '高清步数'],
  denoise: ['Denoising strength', '重绘幅度'],
  upscaler: ['Upscaler', '放大算法'],
  loras: ['LoRAs', 'LoRA'],
  lora_filter: ['Filter LoRAs', '筛选 LoRA'],
  add: ['Add', '添加'],
  in_prompt: ['In the prompt', '提示词中的 LoRA'],
  weight: ['Weight', '权重'],
  no_loras: ['No LoRA files yet: train one, or upload one under Models.', '还没有 LoRA：训练一个，或在“模型”中上传。'],
  base_model: ['Base model', '底模'],
  trigger_words: ['Trigger words', '触发词'],
  rank_alpha: ['Rank / alpha', 'Rank / alpha'],
  gallery: ['Gallery', '图库'],
  send_img2img: ['Send to img2img', '发送到图生图'],
  send_inpaint: ['Send to inpaint', '发送到局部重绘'],
  use_seed: ['Use this seed', '使用此种子'],
  mode_txt2img: ['Text to image', '文生图'],
  mode_img2img: ['Image to image', '图生图'],
  mode_inpaint: ['Inpaint', '局部重绘'],
  init_image: ['Initial image', '初始图像'],
  brush: ['Brush size', '画笔大小'],
  clear_mask: ['Clear mask', '清除蒙版'],
  drop_png: ['Drop a PNG here (or choose one) to read its generation parameters', '拖入 PNG（或选择文件）读取生成参数'],
  apply_params: ['Use these parameters', '使用这些参数'],
  png_info: ['PNG info', 'PNG 信息'],
  no_png_info: ['This image carries no generation parameters.', '此图像不含生成参数。'],
  progress_waiting: ['Waiting in the queue…', '排队中…'],
  datasets: ['Datasets', '数据集'],
  new_dataset: ['New dataset name', '新数据集名称'],
  drop_dataset: ['Drop a folder, a .zip or images here, or choose files', '拖入文件夹、.zip 或图片，或选择文件'],
  choose_files: ['Choose files', '选择文件'],
  choose_folder: ['Choose a folder', '选择文件夹'],
  upload: ['Upload', '上传'],
  uploading: ['Uploading…', '上传中…'],
  delete: ['Delete', '删除'],
  images: ['images', '张图片'],
  captioned: ['captioned', '已标注'],
  save_captions: ['Save captions', '保存标注'],
  unsaved: ['unsaved', '未保存'],
  saved: ['Saved to', '已保存到'],
  find: ['Find', '查找'],
  replace_with: ['Replace with', '替换为'],
  replace_all: ['Replace in all captions', '全部替换'],
  trigger_word: ['Trigger word', '触发词'],
  prefix_all: ['Prefix every caption', '添加到所有标注开头'],
  tag_counts: ['Tag counts', '标签统计'],
  auto_label: ['Auto-label', '自动标注'],
  label_mode: ['Captions that exist', '已有标注'],
  label_missing: ['keep (label only the missing)', '保留（只标注缺失的）'],
  label_overwrite: ['overwrite', '覆盖'],
  label_append: ['append new tags', '追加新标签'],
  no_label_model: ['No captioning model installed: auto-labelling is not available on this server.', '未安装标注模型：此服务器无法自动标注。'],
  labelling: ['Labelling…', '标注中…'],
  bucket_preview: ['Bucket and crop preview at resolution', '分桶与裁剪预览，分辨率'],
  show: ['Show', '显示'],
  select_dataset: ['Choose or create a dataset.', '请选择或创建数据集。'],
  conflict: ['Some captions changed on the server meanwhile; they were reloaded. Your other edits are kept.', '部分标注已在服务器上被修改，已重新加载；其余编辑已保留。'],
  train_form: ['Training settings', '训练设置'],
  load_yaml: ['Load YAML', '加载 YAML'],
  save_yaml: ['Save YAML', '保存 YAML'],
  start_training: ['Start training', '开始训练'],
  cancel: ['Cancel', '取消'],
  resume: ['Resume', '继续训练'],
  checking: ['Checking…', '检查中…'],
  config_ok: ['Config is valid', '配置有效'],
  total_steps: ['total steps', '总步数'],
  runs: ['Runs', '训练记录'],
  loss: ['loss', 'loss'],
  loss_smoothed: ['loss (smoothed)', 'loss（平滑）'],
  lr: ['learning rate', '学习率'],
  grad_norm: ['grad norm', '梯度范数'],
  eta: ['ETA', '剩余时间'],
  step: ['step', '步'],
  epoch: ['epoch', '轮'],
  samples: ['Samples', '样图'],
  logs: ['Log', '日志'],
  files: ['Files', '文件'],
  use_in_generate: ['Use in Generate', '在生成中使用'],
  status: ['Status', '状态'],
  no_runs: ['No trainings yet.', '还没有训练记录。'],
  advanced: ['Show every setting', '显示全部设置'],
  checkpoints: ['Checkpoints', '底模（Checkpoint）'],
  active: ['active', '当前'],
  use: ['Use', '使用'],
  refresh: ['Refresh', '刷新'],
  upload_lora: ['Upload a LoRA (.safetensors)', '上传 LoRA（.safetensors）'],
  metadata: ['Metadata', '元数据'],
  none: ['none', '无'],
  error: ['Error', '错误'],
  close: ['Close', '关闭'],
  default: ['default', '默认'],
  theme: ['Theme', '主题'],
} as const;

export type TextKey = keyof typeof TEXT;
export type Lang = 'en' | 'zh';

const STORE = 'lora-scripts.lang';

function initialLang(): Lang {
  const q = new URLSearchParams(location.search).get('lang');
  const saved = localStorage.getItem(STORE);
  const pick = q ?? saved ?? navigator.language ?? 'en';
  return pick.toLowerCase().startsWith('zh') ? 'zh' : 'en';
}

export let lang: Lang = initialLang();

export function t(key: TextKey): string {
  return TEXT[key][lang === 'zh' ? 1 : 0];
}

export function setLang(l: Lang): void {
  lang = l;
  localStorage.setItem(STORE, l);
  document.documentElement.lang = l === 'zh' ? 'zh-CN' : 'en';
}
